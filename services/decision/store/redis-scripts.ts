/** The Redis store's Lua scripts (lua/*.lua), defined as ioredis commands (EVALSHA, reloaded on NOSCRIPT). */
import { readFileSync } from "node:fs";
import type { Cluster, Redis } from "ioredis";
import { projectFile } from "../../shared/paths";

type Arg = string | number;

/** The scripts as commands: keys first, then arguments. */
export interface ScriptCommands {
  greyfleetDecide(
    triplet: string,
    client: string,
    block: string,
    outbound: string,
    ...args: Arg[]
  ): Promise<[number, number, number]>;
  /** decide.lua with three keys: on a Cluster, where the outbound pair is in another slot. */
  greyfleetDecideInSlot(
    triplet: string,
    client: string,
    block: string,
    ...args: Arg[]
  ): Promise<[number, number, number]>;
  greyfleetBlockNetwork(block: string, durationMs: Arg, offsetMs: Arg): Promise<number>;
  greyfleetLearnOutbound(pair: string, ttlMs: Arg, offsetMs: Arg): Promise<number>;
  greyfleetListsPut(entries: string, version: string, ...fieldsAndValues: string[]): Promise<number>;
  greyfleetListsRemove(entries: string, version: string, ...fields: string[]): Promise<[number, number]>;
  greyfleetInspect(
    triplet: string,
    client: string,
    block: string,
    offsetMs: Arg,
  ): Promise<[number, (string | null)[], number, (string | null)[], string | null]>;
  greyfleetDeleteKeys(numberOfKeys: number, ...keys: string[]): Promise<number>;
  greyfleetImportRecord(key: string, ...args: Arg[]): Promise<number>;
}

const SCRIPTS: readonly [name: keyof ScriptCommands, file: string, keys: number | undefined][] = [
  ["greyfleetDecide", "decide.lua", 4],
  ["greyfleetDecideInSlot", "decide.lua", 3],
  ["greyfleetBlockNetwork", "block-network.lua", 1],
  ["greyfleetLearnOutbound", "learn-outbound.lua", 1],
  ["greyfleetListsPut", "lists-put.lua", 2],
  ["greyfleetListsRemove", "lists-remove.lua", 2],
  ["greyfleetInspect", "inspect.lua", 3],
  // A variable number of keys: the caller passes the count first.
  ["greyfleetDeleteKeys", "delete-keys.lua", undefined],
  ["greyfleetImportRecord", "import-record.lua", 1],
];

const sources = new Map(
  SCRIPTS.map(([, file]) => [file, readFileSync(projectFile(`services/decision/store/lua/${file}`), "utf8")]),
);

/** Defines every script on `redis` (a server or a Cluster) and returns it typed with them. */
export function defineScripts<T extends Redis | Cluster>(redis: T): T & ScriptCommands {
  for (const [name, file, numberOfKeys] of SCRIPTS) {
    redis.defineCommand(name, {
      lua: sources.get(file) as string,
      ...(numberOfKeys === undefined ? {} : { numberOfKeys }),
    });
  }
  return redis as T & ScriptCommands;
}
