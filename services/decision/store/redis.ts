/**
 * `redis://` store: the fleet store. Each decision is one EVALSHA of lua/decide.lua, so every
 * MX host sees one atomic read-decide-write and one clock (Redis TIME); the outbound pair (a
 * reply to a local user) is read in the same script. Expiry is Redis TTL.
 */
import type { Redis } from "ioredis";
import type { ListEntryValue } from "../domain/lists";
import type { GreylistPolicy } from "../domain/verdict";
import { networkId, outboundId, RedisKeys, tripletId } from "./keys";
import { replyPairId } from "./record-store";
import * as admin from "./redis-admin";
import { connectRedis, type RedisConnectOptions, type RedisTarget, WriteCoalescer } from "./redis-connect";
import { defineScripts } from "./redis-scripts";
import type {
  EntryKey,
  ImportResult,
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
export interface RedisStoreOptions extends RedisConnectOptions {
  /** One server, a Sentinel-monitored master or a Cluster (from parseStoreUrl). */
  readonly target: RedisTarget;
  /** Prefix of every key (default "gf:"). */
  readonly keyPrefix: string;
  /** Called on connection errors and state changes, for logging. */
  readonly onEvent?: (event: "error" | "ready" | "close", detail?: string) => void;
  /** Test hook: ms added to Redis TIME, to move the store's clock without sleeping. */
  readonly clockOffsetMs?: () => number;
}

/** Up to this many keys in Redis, the metrics' counts are exact; above, estimated from a sample. */
const EXACT_COUNT_MAX_KEYS = 50_000;

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

/** The Redis store. */
export class RedisStore implements Store {
  readonly kind = "redis";
  private readonly redis: admin.Connection["client"];
  private readonly connection: admin.Connection;
  /** On a Cluster the outbound pair is in another slot: read alongside, not in the script. */
  private readonly cluster: boolean;
  private readonly keys: RedisKeys;
  private readonly clockOffsetMs: () => number;
  /** Batches the decisions' writes per server. */
  private readonly coalescer: WriteCoalescer;

  constructor(options: RedisStoreOptions) {
    const connected = connectRedis(options.target, options);
    const redis = connected.client;
    this.redis = defineScripts<typeof redis>(redis);
    this.cluster = connected.cluster;
    this.connection = {
      client: this.redis,
      nodes: (): Redis[] => (connected.cluster ? connected.client.nodes("master") : [connected.client]),
    };
    this.coalescer = new WriteCoalescer(this.connection.nodes);
    this.keys = new RedisKeys(options.keyPrefix);
    this.clockOffsetMs = options.clockOffsetMs ?? (() => 0);
    const onEvent = options.onEvent ?? (() => {});
    redis.on("error", (error: Error) => onEvent("error", error.message));
    redis.on("ready", () => onEvent("ready"));
    redis.on("close", () => onEvent("close"));
  }

  async decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision> {
    const netId = networkId(query.network);
    const pairKey = query.outbound ? this.keys.outbound(replyPairId(query)) : "";
    const triplet = this.keys.triplet(netId, tripletId(query));
    const args = [policyArgument(policy), query.singleUse ? "1" : "0", this.clockOffsetMs()];
    // On one server the script reads the pair; on a Cluster it lives in another slot, so it is
    // read by a GET sent in the same turn (in flight together: still one round trip).
    this.coalescer.beforeCommand();
    const decided = this.cluster
      ? this.redis.greyfleetDecideInSlot(triplet, this.keys.client(netId), this.keys.block(netId), ...args)
      : this.redis.greyfleetDecide(triplet, this.keys.client(netId), this.keys.block(netId), pairKey, ...args);
    const pair = this.cluster && pairKey !== "" ? this.redis.get(pairKey).catch(() => null) : undefined;
    const [code, ms, nowMs] = await decided;
    const outcome = toOutcome(code, ms);
    if (pair && outcome.kind !== "network_blocked" && Number((await pair) ?? 0) > nowMs) {
      return { outcome: { kind: "outbound_reply" }, nowMs };
    }
    return { outcome, nowMs };
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
    return admin.inspect(this.connection, this.keys, query, this.clockOffsetMs());
  }

  async deleteTriplet(query: TripletQuery): Promise<boolean> {
    const key = this.keys.triplet(networkId(query.network), tripletId(query));
    return (await this.redis.greyfleetDeleteKeys(1, key)) > 0;
  }

  flushNetwork(network: string): Promise<number> {
    return admin.flushNetwork(this.connection, this.keys, networkId(network));
  }

  stats(autoWhitelistPasses: number): Promise<StoreStats> {
    return admin.stats(this.connection, this.keys, autoWhitelistPasses);
  }

  async sampleStats(autoWhitelistPasses: number): Promise<StoreStats> {
    // A small greylist is counted exactly (one SCAN pass is cheap); a large one is estimated.
    let keys = 0;
    for (const node of this.connection.nodes()) keys += await node.dbsize();
    return keys <= EXACT_COUNT_MAX_KEYS
      ? admin.stats(this.connection, this.keys, autoWhitelistPasses)
      : admin.estimateStats(this.connection, this.keys, autoWhitelistPasses);
  }

  exportRecords(): AsyncIterable<StateRecord> {
    return admin.exportRecords(this.connection, this.keys);
  }

  importRecords(records: AsyncIterable<StateRecord>): Promise<ImportResult> {
    return admin.importRecords(this.connection, this.keys, records);
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
