/** Opens the store a --store URL names. */
import { join } from "node:path";
import { MemoryStore } from "./memory";
import { RedisStore } from "./redis";
import { SqliteStore } from "./sqlite";
import type { GreylistStore } from "./store";

/** What opening a store needs besides its URL. */
export interface OpenStoreOptions {
  /** Directory of the default SQLite file (for "sqlite:" without a path). */
  readonly dataDir: string;
  readonly redisKeyPrefix: string;
  readonly storeTimeoutMs: number;
  /** Connection events and background errors, for logging. */
  readonly onEvent: (event: string, detail?: string) => void;
}

/** Checks a store URL without opening anything; returns a message naming the problem, or undefined. */
export function checkStoreUrl(url: string): string | undefined {
  if (url === "memory:" || url.startsWith("sqlite:")) return undefined;
  if (url.startsWith("rediss://") || url.startsWith("redis+sentinel") || url.startsWith("redis+cluster")) {
    return `--store ${url.split(":")[0]}: TLS, Sentinel and Cluster store URLs are not supported in this version; use redis://host:port`;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `--store "${url}" is not a URL (expected redis://[user:pass@]host:port[/db])`;
  }
  if (parsed.protocol !== "redis:") return `--store "${url}": unknown scheme (sqlite:, redis://, memory:)`;
  if (parsed.hostname === "") return `--store "${url}" has no host`;
  if (!/^(\/\d{0,2})?$/.test(parsed.pathname)) return `--store "${url}": the path must be a database number, e.g. /0`;
  if (parsed.search !== "" || parsed.hash !== "") return `--store "${url}": query options are not supported`;
  return undefined;
}

/** Opens the store; throws with a message naming --store if it cannot be opened. */
export function openStore(url: string, options: OpenStoreOptions): GreylistStore {
  const problem = checkStoreUrl(url);
  if (problem) throw new Error(problem);
  if (url === "memory:") return new MemoryStore();
  if (url.startsWith("sqlite:")) {
    const path = url.slice("sqlite:".length) || join(options.dataDir, "greyfleet.sqlite");
    try {
      return new SqliteStore(path, Date.now, (error) => options.onEvent("error", String(error)));
    } catch (error) {
      throw new Error(`--store sqlite:${path}: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    }
  }
  return new RedisStore({
    url,
    keyPrefix: options.redisKeyPrefix,
    commandTimeoutMs: options.storeTimeoutMs,
    onEvent: options.onEvent,
  });
}
