/**
 * `redis://` store: the fleet store. Each decision is one EVALSHA of lua/decide.lua, so every
 * MX host sees one atomic read-decide-write and one clock (Redis TIME); the outbound pair (a
 * reply to a local user) is read in the same script. Expiry is Redis TTL.
 */
import Redis, { type RedisOptions } from "ioredis";
import type { ListEntryValue } from "../domain/lists";
import type { GreylistPolicy } from "../domain/verdict";
import { networkId, outboundId, RedisKeys, tripletId } from "./keys";
import { replyPairId } from "./record-store";
import * as admin from "./redis-admin";
import { defineScripts, type ScriptCommands } from "./redis-scripts";
import type {
  EntryKey,
  Inspection,
  OutboundPair,
  StateRecord,
  Store,
  StoreDecision,
  StoreOutcome,
  StoreStats,
  TripletQuery,
} from "./store";

/** Options of the Redis store. */
export interface RedisStoreOptions {
  /** redis://[user:pass@]host:port[/db] */
  readonly url: string;
  /** Prefix of every key (default "gf:"). */
  readonly keyPrefix: string;
  /** Connecting may take this many ms before it is retried. */
  readonly connectTimeoutMs: number;
  /** Called on connection errors and state changes, for logging. */
  readonly onEvent?: (event: "error" | "ready" | "close", detail?: string) => void;
  /** Test hook: ms added to Redis TIME, to move the store's clock without sleeping. */
  readonly clockOffsetMs?: () => number;
}

const policyArguments = new WeakMap<GreylistPolicy, string>();

/** decide.lua's ARGV[1], built once per policy object. */
function policyArgument(policy: GreylistPolicy): string {
  let argument = policyArguments.get(policy);
  if (argument === undefined) {
    argument = [
      policy.delayMs,
      policy.retryWindowMs,
      policy.maxAgeMs,
      policy.autoWhitelistPasses,
      policy.autoWhitelistCountIntervalMs,
    ].join(",");
    policyArguments.set(policy, argument);
  }
  return argument;
}

function toOutcome(code: number, ms: number): StoreOutcome {
  switch (code) {
    case 1:
      return { kind: "new_triplet", retryAfterMs: ms };
    case 2:
      return { kind: "too_early", retryAfterMs: ms };
    case 3:
      return { kind: "passed_after_retry", delayedMs: ms };
    case 4:
      return { kind: "known_triplet" };
    case 5:
      return { kind: "client_auto_whitelisted" };
    case 6:
      return { kind: "network_blocked" };
    case 7:
      return { kind: "outbound_reply" };
    default:
      throw new Error(`decide.lua returned unknown code ${String(code)}`);
  }
}

/**
 * Connection options shared by every greyfleet Redis client. Commands get no timeout of their
 * own: the engine bounds every call by the store timeout and the caller's deadline, and answers
 * by the failure mode past it; a late reply is then simply dropped.
 */
export function redisClientOptions(connectTimeoutMs: number): RedisOptions {
  return {
    // Fail fast while disconnected instead of queueing: the failure mode answers meanwhile.
    enableOfflineQueue: false,
    // A decision may already be recorded when its connection drops: never resend it blindly.
    maxRetriesPerRequest: 0,
    connectTimeout: connectTimeoutMs,
    // Reconnect for ever, at most once a second.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
    enableAutoPipelining: true,
  };
}

/** The Redis store. */
export class RedisStore implements Store {
  readonly kind = "redis";
  private readonly redis: Redis & ScriptCommands;
  private readonly keys: RedisKeys;
  private readonly clockOffsetMs: () => number;

  constructor(options: RedisStoreOptions) {
    const redis = new Redis(options.url, redisClientOptions(options.connectTimeoutMs));
    this.redis = defineScripts(redis);
    this.keys = new RedisKeys(options.keyPrefix);
    this.clockOffsetMs = options.clockOffsetMs ?? (() => 0);
    const onEvent = options.onEvent ?? (() => {});
    redis.on("error", (error: Error) => onEvent("error", error.message));
    redis.on("ready", () => onEvent("ready"));
    redis.on("close", () => onEvent("close"));
  }

  async decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision> {
    const netId = networkId(query.network);
    const [code, ms, nowMs] = await this.redis.greyfleetDecide(
      this.keys.triplet(netId, tripletId(query)),
      this.keys.client(netId),
      this.keys.block(netId),
      // On one Redis server the pair is read inside the script; a Cluster store (another slot)
      // will read it alongside instead.
      query.outbound ? this.keys.outbound(replyPairId(query)) : "",
      policyArgument(policy),
      query.singleUse ? "1" : "0",
      this.clockOffsetMs(),
    );
    return { outcome: toOutcome(code, ms), nowMs };
  }

  async blockNetwork(network: string, durationMs: number): Promise<void> {
    await this.redis.greyfleetBlockNetwork(this.keys.block(networkId(network)), durationMs, this.clockOffsetMs());
  }

  async learnOutbound(pairs: readonly OutboundPair[], ttlMs: number): Promise<void> {
    // One script per pair: each pair's key may live in its own Cluster slot.
    const offset = this.clockOffsetMs();
    await Promise.all(
      pairs.map((pair) => this.redis.greyfleetLearnOutbound(this.keys.outbound(outboundId(pair)), ttlMs, offset)),
    );
  }

  async listsVersion(): Promise<number> {
    return Number((await this.redis.get(this.keys.listsVersion())) ?? 0);
  }

  async listEntries(): Promise<ListEntryValue[]> {
    return admin.parseEntries(await this.redis.hvals(this.keys.listEntries()));
  }

  async putEntries(entries: readonly ListEntryValue[]): Promise<void> {
    const args = entries.flatMap((entry) => [`${entry.kind}\0${entry.value}`, JSON.stringify(entry)]);
    await this.redis.greyfleetListsPut(this.keys.listEntries(), this.keys.listsVersion(), ...args);
  }

  async removeEntries(keys: readonly EntryKey[]): Promise<number> {
    const fields = keys.map((key) => `${key.kind}\0${key.value}`);
    const [removed] = await this.redis.greyfleetListsRemove(
      this.keys.listEntries(),
      this.keys.listsVersion(),
      ...fields,
    );
    return removed;
  }

  inspect(query: TripletQuery): Promise<Inspection> {
    return admin.inspect(this.redis, this.keys, query, this.clockOffsetMs());
  }

  async deleteTriplet(query: TripletQuery): Promise<boolean> {
    const key = this.keys.triplet(networkId(query.network), tripletId(query));
    return (await this.redis.greyfleetDeleteKeys(1, key)) > 0;
  }

  flushNetwork(network: string): Promise<number> {
    return admin.flushNetwork(this.redis, this.keys, networkId(network));
  }

  stats(autoWhitelistPasses: number): Promise<StoreStats> {
    return admin.stats(this.redis, this.keys, autoWhitelistPasses);
  }

  sampleStats(autoWhitelistPasses: number): Promise<StoreStats> {
    return admin.estimateStats(this.redis, this.keys, autoWhitelistPasses);
  }

  exportRecords(): AsyncIterable<StateRecord> {
    return admin.exportRecords(this.redis, this.keys);
  }

  importRecords(records: AsyncIterable<StateRecord>): Promise<{ imported: number; expired: number }> {
    return admin.importRecords(this.redis, this.keys, records);
  }

  waitUntilReady(timeoutMs: number): Promise<void> {
    if (this.redis.status === "ready") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.redis.off("ready", onReady);
        reject(new Error(`Redis not reachable within ${timeoutMs} ms`));
      }, timeoutMs);
      const onReady = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.redis.once("ready", onReady);
    });
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      // Not connected: QUIT cannot be sent, so just drop the socket and stop reconnecting.
      this.redis.disconnect();
    }
  }
}
