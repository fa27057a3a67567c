/** `memory:` store: the TypeScript state machine over in-process maps. Tests and throwaway runs only. */
import type { ListEntryValue } from "../domain/lists";
import type { ClientRecord, GreylistPolicy, TripletRecord } from "../domain/verdict";
import { networkId, outboundId, tripletId } from "./keys";
import { decideInTransaction, inspectInTransaction, type RecordTransaction, type StoredTriplet } from "./record-store";
import {
  type EntryKey,
  type ImportResult,
  type Inspection,
  type OutboundPair,
  restoreOrder,
  type StateRecord,
  type Store,
  type StoreDecision,
  type StoreStats,
  type TripletQuery,
} from "./store";

interface Expiring<T> {
  readonly record: T;
  readonly expiresMs: number;
  /** The record's network, for flushes. */
  readonly netId: string;
}

/** Expired entries are swept after this many decisions, so a long run does not grow forever. */
const SWEEP_EVERY_DECISIONS = 10_000;

/** In-memory store with an injected clock (epoch ms). */
export class MemoryStore implements Store, RecordTransaction {
  readonly kind = "memory";
  private readonly triplets = new Map<string, Expiring<TripletRecord>>();
  private readonly clients = new Map<string, Expiring<ClientRecord>>();
  private readonly blocks = new Map<string, number>();
  private readonly outbound = new Map<string, number>();
  private readonly entries = new Map<string, ListEntryValue>();
  private version = 0;
  private decisions = 0;
  private closed = false;

  constructor(private readonly now: () => number = Date.now) {}

  decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision> {
    return this.run(() => {
      const nowMs = this.now();
      if (++this.decisions % SWEEP_EVERY_DECISIONS === 0) this.sweep(nowMs);
      return decideInTransaction(this, query, policy, nowMs);
    });
  }

  blockNetwork(network: string, durationMs: number): Promise<void> {
    return this.run(() => void this.blocks.set(networkId(network), this.now() + durationMs));
  }

  learnOutbound(pairs: readonly OutboundPair[], ttlMs: number): Promise<void> {
    return this.run(() => {
      for (const pair of pairs) this.outbound.set(outboundId(pair), this.now() + ttlMs);
    });
  }

  listsVersion(): Promise<number> {
    return this.run(() => this.version);
  }

  listEntries(): Promise<ListEntryValue[]> {
    return this.run(() => [...this.entries.values()]);
  }

  putEntries(entries: readonly ListEntryValue[]): Promise<void> {
    return this.run(() => {
      for (const entry of entries) this.entries.set(`${entry.kind}\0${entry.value}`, entry);
      this.version++;
    });
  }

  removeEntries(keys: readonly EntryKey[]): Promise<number> {
    return this.run(() => {
      let removed = 0;
      for (const key of keys) if (this.entries.delete(`${key.kind}\0${key.value}`)) removed++;
      this.version++;
      return removed;
    });
  }

  inspect(query: TripletQuery): Promise<Inspection> {
    return this.run(() => inspectInTransaction(this, query, this.now()));
  }

  deleteTriplet(query: TripletQuery): Promise<boolean> {
    return this.run(() => this.triplets.delete(tripletId(query)));
  }

  flushNetwork(network: string): Promise<number> {
    return this.run(() => {
      const netId = networkId(network);
      let removed = 0;
      for (const [id, entry] of this.triplets) if (entry.netId === netId && this.triplets.delete(id)) removed++;
      if (this.clients.delete(netId)) removed++;
      if (this.blocks.delete(netId)) removed++;
      return removed;
    });
  }

  sampleStats(autoWhitelistPasses: number): Promise<StoreStats> {
    return this.stats(autoWhitelistPasses);
  }

  stats(autoWhitelistPasses: number): Promise<StoreStats> {
    return this.run(() => {
      const nowMs = this.now();
      this.sweep(nowMs);
      const passed = [...this.triplets.values()].filter((t) => t.record.passedMs > 0).length;
      return {
        pendingTriplets: this.triplets.size - passed,
        passedTriplets: passed,
        autoWhitelistedClients:
          autoWhitelistPasses > 0
            ? [...this.clients.values()].filter((c) => c.record.passes >= autoWhitelistPasses).length
            : 0,
        greytrappedNetworks: this.blocks.size,
        outboundPairs: this.outbound.size,
      };
    });
  }

  async *exportRecords(): AsyncIterable<StateRecord> {
    const nowMs = this.now();
    this.sweep(nowMs);
    for (const [id, { record, expiresMs, netId }] of this.triplets) {
      yield { type: "triplet", id, networkId: netId, ...record, expiresMs };
    }
    for (const [netId, { record, expiresMs }] of this.clients) {
      yield { type: "client", networkId: netId, ...record, expiresMs };
    }
    for (const [netId, expiresMs] of this.blocks) yield { type: "block", networkId: netId, expiresMs };
    for (const [id, expiresMs] of this.outbound) yield { type: "outbound", id, expiresMs };
    for (const entry of this.entries.values()) yield { type: "entry", entry };
  }

  async importRecords(records: AsyncIterable<StateRecord>): Promise<ImportResult> {
    let imported = 0;
    let expired = 0;
    let kept = 0;
    for await (const record of records) {
      const expiresMs =
        record.type === "entry" ? record.entry.expiresAtMs || Number.MAX_SAFE_INTEGER : record.expiresMs;
      if (expiresMs <= this.now()) {
        expired++;
        continue;
      }
      const stored = this.storedOrder(record);
      if (stored !== undefined && stored >= restoreOrder(record)) {
        kept++;
        continue;
      }
      switch (record.type) {
        case "triplet": {
          const { firstSeenMs, passedMs, lastSeenMs } = record;
          this.triplets.set(record.id, {
            record: { firstSeenMs, passedMs, lastSeenMs },
            expiresMs,
            netId: record.networkId,
          });
          break;
        }
        case "client": {
          const { passes, lastCountedMs, lastSeenMs } = record;
          this.clients.set(record.networkId, {
            record: { passes, lastCountedMs, lastSeenMs },
            expiresMs,
            netId: record.networkId,
          });
          break;
        }
        case "block":
          this.blocks.set(record.networkId, expiresMs);
          break;
        case "outbound":
          this.outbound.set(record.id, expiresMs);
          break;
        case "entry":
          this.entries.set(`${record.entry.kind}\0${record.entry.value}`, record.entry);
          this.version++;
          break;
      }
      imported++;
    }
    return { imported, expired, kept };
  }

  /** restoreOrder() of the store's unexpired record with the same key as `record`, if any. */
  private storedOrder(record: StateRecord): number | undefined {
    const nowMs = this.now();
    const live = <T extends { expiresMs: number }>(value: T | undefined) =>
      value && value.expiresMs > nowMs ? value : undefined;
    const end = (expiresMs: number | undefined) =>
      expiresMs !== undefined && expiresMs > nowMs ? expiresMs : undefined;
    switch (record.type) {
      case "triplet":
        return live(this.triplets.get(record.id))?.record.lastSeenMs;
      case "client":
        return live(this.clients.get(record.networkId))?.record.lastSeenMs;
      case "block":
        return end(this.blocks.get(record.networkId));
      case "outbound":
        return end(this.outbound.get(record.id));
      case "entry": {
        const entry = this.entries.get(`${record.entry.kind}\0${record.entry.value}`);
        return entry && (entry.expiresAtMs === 0 || entry.expiresAtMs > nowMs) ? entry.createdAtMs : undefined;
      }
    }
  }

  getTriplet(id: string, nowMs: number): StoredTriplet | undefined {
    const entry = this.triplets.get(id);
    return entry && entry.expiresMs > nowMs ? { ...entry.record, expiresMs: entry.expiresMs } : undefined;
  }

  getClient(netId: string, nowMs: number): ClientRecord | undefined {
    const entry = this.clients.get(netId);
    return entry && entry.expiresMs > nowMs ? entry.record : undefined;
  }

  getBlock(netId: string, nowMs: number): number {
    const until = this.blocks.get(netId) ?? 0;
    return until > nowMs ? until : 0;
  }

  hasOutbound(id: string, nowMs: number): boolean {
    return (this.outbound.get(id) ?? 0) > nowMs;
  }

  putTriplet(id: string, netId: string, record: TripletRecord | null, expiresMs: number): void {
    if (record === null) this.triplets.delete(id);
    else this.triplets.set(id, { record, expiresMs, netId });
  }

  putClient(netId: string, record: ClientRecord, expiresMs: number): void {
    this.clients.set(netId, { record, expiresMs, netId });
  }

  waitUntilReady(): Promise<void> {
    return this.ping();
  }

  ping(): Promise<void> {
    return this.run(() => undefined);
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private run<T>(body: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new Error("memory store is closed"));
    return Promise.resolve(body());
  }

  private sweep(nowMs: number): void {
    for (const map of [this.triplets, this.clients] as Map<string, Expiring<unknown>>[]) {
      for (const [key, entry] of map) if (entry.expiresMs <= nowMs) map.delete(key);
    }
    for (const map of [this.blocks, this.outbound]) {
      for (const [key, expiresMs] of map) if (expiresMs <= nowMs) map.delete(key);
    }
  }
}
