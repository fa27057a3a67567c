/**
 * The Redis store's administrator operations: inspection, deletion, statistics, export and
 * import. They scan the deployment's keys (SCAN, in batches): on demand, never per decision.
 */
import type { Cluster, Redis } from "ioredis";
import type { ListEntryValue } from "../domain/lists";
import { networkId, type RedisKeys, tripletId } from "./keys";
import { replyPairId } from "./record-store";
import type { ScriptCommands } from "./redis-scripts";
import {
  type ImportResult,
  type Inspection,
  restoreOrder,
  type StateRecord,
  type StoreStats,
  type TripletQuery,
} from "./store";

/** The store's connection: keyed commands go through `client` (routed by slot on a Cluster); scans run on every master in `nodes`. */
export interface Connection {
  readonly client: (Redis | Cluster) & ScriptCommands;
  nodes(): Redis[];
}

/** Keys per SCAN call. */
const SCAN_COUNT = 1_000;

const num = (value: string | null | undefined): number => (value ? Number(value) : 0);

/** List entries from the entries hash's values; malformed ones are skipped. */
export function parseEntries(values: readonly string[]): ListEntryValue[] {
  const entries: ListEntryValue[] = [];
  for (const value of values) {
    try {
      entries.push(JSON.parse(value) as ListEntryValue);
    } catch {
      // A value not written by lists-put.lua: ignored rather than breaking every process.
    }
  }
  return entries;
}

/** Reads a triplet, its network and its outbound pair without changing anything. */
export async function inspect(
  { client: redis }: Connection,
  keys: RedisKeys,
  query: TripletQuery,
  offsetMs: number,
): Promise<Inspection> {
  const netId = networkId(query.network);
  const [snapshot, outbound] = await Promise.all([
    redis.greyfleetInspect(keys.triplet(netId, tripletId(query)), keys.client(netId), keys.block(netId), offsetMs),
    redis.get(keys.outbound(replyPairId(query))),
  ]);
  const [nowMs, [f, p, l], ttl, [n, c, cl], block] = snapshot;
  return {
    nowMs,
    triplet: f
      ? { firstSeenMs: num(f), passedMs: num(p), lastSeenMs: num(l), expiresMs: nowMs + Math.max(0, ttl) }
      : undefined,
    client: n ? { passes: num(n), lastCountedMs: num(c), lastSeenMs: num(cl) } : undefined,
    blockedUntilMs: num(block) > nowMs ? num(block) : 0,
    outbound: num(outbound) > nowMs,
  };
}

/** Calls `each` with every batch of keys matching `pattern`, and the node holding them. */
async function scan(
  connection: Connection,
  pattern: string,
  each: (keys: string[], node: Redis) => Promise<void>,
): Promise<void> {
  for (const node of connection.nodes()) {
    let cursor = "0";
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", SCAN_COUNT);
      if (keys.length > 0) await each(keys, node);
      cursor = next;
    } while (cursor !== "0");
  }
}

/** Deletes every key of one network (one slot) in one script call. */
export async function flushNetwork(connection: Connection, keys: RedisKeys, netId: string): Promise<number> {
  const found: string[] = [];
  await scan(connection, keys.network(netId), async (batch) => void found.push(...batch));
  return found.length === 0 ? 0 : connection.client.greyfleetDeleteKeys(found.length, ...found);
}

/** What a key of this deployment holds, from its name. */
function keyType(key: string): "triplet" | "client" | "block" | "outbound" | "lists" {
  if (key.includes("}:t:")) return "triplet";
  if (key.endsWith("}:c")) return "client";
  if (key.endsWith("}:b")) return "block";
  if (key.includes("{lists}")) return "lists";
  return "outbound";
}

/** Counts the state by scanning it. */
export async function stats(connection: Connection, keys: RedisKeys, autoWhitelistPasses: number): Promise<StoreStats> {
  const counts = { pending: 0, passed: 0, whitelisted: 0, blocks: 0, outbound: 0 };
  await scan(connection, keys.all(), async (batch, node) => {
    const pipeline = node.pipeline();
    const types = batch.map(keyType);
    batch.forEach((key, i) => {
      if (types[i] === "triplet") pipeline.hexists(key, "p");
      else if (types[i] === "client") pipeline.hget(key, "n");
      else pipeline.exists(key);
    });
    const results = (await pipeline.exec()) ?? [];
    results.forEach(([, value], i) => {
      const type = types[i];
      if (type === "triplet") counts[value === 1 ? "passed" : "pending"]++;
      else if (type === "client" && autoWhitelistPasses > 0 && Number(value) >= autoWhitelistPasses)
        counts.whitelisted++;
      else if (type === "block") counts.blocks++;
      else if (type === "outbound") counts.outbound++;
    });
  });
  return {
    pendingTriplets: counts.pending,
    passedTriplets: counts.passed,
    autoWhitelistedClients: counts.whitelisted,
    greytrappedNetworks: counts.blocks,
    outboundPairs: counts.outbound,
  };
}

/** Random keys looked at per estimate. */
const SAMPLE_KEYS = 200;

/**
 * Estimates the counts from random keys (RANDOMKEY) scaled by DBSIZE, node by node: a few
 * hundred commands whatever the size of the greylist. Keys of other deployments count as
 * "other", so the estimate holds on a shared Redis too.
 */
export async function estimateStats(
  connection: Connection,
  keys: RedisKeys,
  autoWhitelistPasses: number,
): Promise<StoreStats> {
  const counts = { pending: 0, passed: 0, whitelisted: 0, blocks: 0, outbound: 0 };
  let size = 0;
  let samples = 0;
  const masters = connection.nodes();
  for (const node of masters) {
    const nodeSize = await node.dbsize();
    const nodeSamples = Math.min(Math.ceil(SAMPLE_KEYS / masters.length), nodeSize);
    size += nodeSize;
    if (nodeSamples === 0) continue;
    // Each node is sampled in proportion to its share of the keys.
    const weight = nodeSize / nodeSamples;
    const pipeline = node.pipeline();
    for (let i = 0; i < nodeSamples; i++) pipeline.randomkey();
    const sampled = ((await pipeline.exec()) ?? []).map(([, key]) => String(key ?? ""));
    const ours = sampled.filter((key) => key.startsWith(keys.prefix) && !key.includes("{lists}"));
    const details = node.pipeline();
    for (const key of ours) {
      if (keyType(key) === "triplet") details.hexists(key, "p");
      else if (keyType(key) === "client") details.hget(key, "n");
      else details.exists(key);
    }
    const results = (await details.exec()) ?? [];
    ours.forEach((key, i) => {
      const value = results[i]?.[1];
      const type = keyType(key);
      if (type === "triplet") counts[value === 1 ? "passed" : "pending"] += weight;
      else if (type === "client" && autoWhitelistPasses > 0 && Number(value) >= autoWhitelistPasses)
        counts.whitelisted += weight;
      else if (type === "block") counts.blocks += weight;
      else if (type === "outbound") counts.outbound += weight;
    });
    samples += nodeSamples;
  }
  const round = (n: number): number => (samples === 0 || size === 0 ? 0 : Math.round(n));
  return {
    pendingTriplets: round(counts.pending),
    passedTriplets: round(counts.passed),
    autoWhitelistedClients: round(counts.whitelisted),
    greytrappedNetworks: round(counts.blocks),
    outboundPairs: round(counts.outbound),
  };
}

/** Every unexpired record, read batch by batch. */
export async function* exportRecords(connection: Connection, keys: RedisKeys): AsyncIterable<StateRecord> {
  for (const node of connection.nodes()) {
    let cursor = "0";
    do {
      const [next, batch] = await node.scan(cursor, "MATCH", keys.all(), "COUNT", SCAN_COUNT);
      cursor = next;
      const nowMs = Date.now();
      for (const key of batch) {
        const type = keyType(key);
        const netId = /\{([0-9a-f]{16})\}/.exec(key)?.[1] ?? "";
        if (type === "lists") continue;
        const ttl = await node.pttl(key);
        if (ttl <= 0) continue;
        const expiresMs = nowMs + ttl;
        if (type === "triplet") {
          const [f, p, l] = await node.hmget(key, "f", "p", "l");
          const id = key.slice(key.lastIndexOf(":") + 1);
          yield { type, id, networkId: netId, firstSeenMs: num(f), passedMs: num(p), lastSeenMs: num(l), expiresMs };
        } else if (type === "client") {
          const [n, c, l] = await node.hmget(key, "n", "c", "l");
          yield { type, networkId: netId, passes: num(n), lastCountedMs: num(c), lastSeenMs: num(l), expiresMs };
        } else {
          // Blocks and pairs hold their end time in the store's clock: export that, not the TTL.
          const until = num(await node.get(key)) || expiresMs;
          if (type === "block") yield { type, networkId: netId, expiresMs: until };
          else yield { type: "outbound", id: key.slice(key.lastIndexOf(":") + 1), expiresMs: until };
        }
      }
    } while (cursor !== "0");
  }
  for (const entry of parseEntries(await connection.client.hvals(keys.listEntries()))) yield { type: "entry", entry };
}

/**
 * Writes records with their absolute expiry times; list entries bump the lists version. List
 * entries are written together at the end, also when the records stop with an error: as in every
 * store, the records before a refused one stay written.
 */
export async function importRecords(
  { client: redis }: Connection,
  keys: RedisKeys,
  records: AsyncIterable<StateRecord>,
): Promise<ImportResult> {
  const counts = { imported: 0, expired: 0, kept: 0 };
  const entries: ListEntryValue[] = [];
  try {
    for await (const record of records) {
      if (record.type === "entry") {
        if (record.entry.expiresAtMs !== 0 && record.entry.expiresAtMs <= Date.now()) counts.expired++;
        else entries.push(record.entry);
        continue;
      }
      if (record.expiresMs <= Date.now()) {
        counts.expired++;
        continue;
      }
      const [key, kind, values] = importedValues(keys, record);
      const written = await redis.greyfleetImportRecord(key, kind, record.expiresMs, restoreOrder(record), ...values);
      counts[written === 1 ? "imported" : "kept"]++;
    }
  } catch (error) {
    // The entries read before the failure are written all the same; the failure is what is reported.
    await importEntries(redis, keys, entries, counts).catch(() => {});
    throw error;
  }
  await importEntries(redis, keys, entries, counts);
  return counts;
}

/** Writes restored list entries, each unless the store holds it as new or newer. */
async function importEntries(
  redis: Connection["client"],
  keys: RedisKeys,
  entries: readonly ListEntryValue[],
  counts: { imported: number; kept: number },
): Promise<void> {
  if (entries.length > 0) {
    // Entries are compared here, not in a script: they live as JSON in one hash.
    const stored = new Map(
      parseEntries(await redis.hvals(keys.listEntries())).map((entry) => [`${entry.kind}\0${entry.value}`, entry]),
    );
    const now = Date.now();
    const args: string[] = [];
    for (const entry of entries) {
      const held = stored.get(`${entry.kind}\0${entry.value}`);
      const live = held !== undefined && (held.expiresAtMs === 0 || held.expiresAtMs > now);
      if (live && held.createdAtMs >= entry.createdAtMs) counts.kept++;
      else args.push(`${entry.kind}\0${entry.value}`, JSON.stringify(entry));
    }
    if (args.length > 0) await redis.greyfleetListsPut(keys.listEntries(), keys.listsVersion(), ...args);
    counts.imported += args.length / 2;
  }
}

/** The key, kind and fields (hash) or value (string) of an exported record. */
function importedValues(
  keys: RedisKeys,
  record: Exclude<StateRecord, { type: "entry" }>,
): [key: string, kind: "hash" | "string", values: (string | number)[]] {
  switch (record.type) {
    case "triplet":
      return [
        keys.triplet(record.networkId, record.id),
        "hash",
        ["f", record.firstSeenMs, "l", record.lastSeenMs, ...(record.passedMs > 0 ? ["p", record.passedMs] : [])],
      ];
    case "client":
      return [
        keys.client(record.networkId),
        "hash",
        ["n", record.passes, "c", record.lastCountedMs, "l", record.lastSeenMs],
      ];
    case "block":
      return [keys.block(record.networkId), "string", [record.expiresMs]];
    case "outbound":
      return [keys.outbound(record.id), "string", [record.expiresMs]];
  }
}
