/** `memory:` store: the TypeScript state machine over in-process maps. Tests and throwaway runs only. */
import type { ClientRecord, GreylistPolicy, TripletRecord } from "../domain/verdict";
import { decideInTransaction, type RecordTransaction } from "./record-store";
import type { GreylistStore, StoreDecision, TripletQuery } from "./store";

interface Expiring<T> {
  readonly record: T;
  readonly expiresMs: number;
}

/** Expired entries are swept after this many decisions, so a long run does not grow forever. */
const SWEEP_EVERY_DECISIONS = 10_000;

/** In-memory store with an injected clock (epoch ms). */
export class MemoryStore implements GreylistStore, RecordTransaction {
  readonly kind = "memory";
  private readonly triplets = new Map<string, Expiring<TripletRecord>>();
  private readonly clients = new Map<string, Expiring<ClientRecord>>();
  private decisions = 0;
  private closed = false;

  constructor(private readonly now: () => number = Date.now) {}

  decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision> {
    if (this.closed) return Promise.reject(new Error("memory store is closed"));
    const nowMs = this.now();
    if (++this.decisions % SWEEP_EVERY_DECISIONS === 0) this.sweep(nowMs);
    return Promise.resolve(decideInTransaction(this, query, policy, nowMs));
  }

  getTriplet(id: string, nowMs: number): TripletRecord | undefined {
    return live(this.triplets.get(id), nowMs);
  }

  getClient(netId: string, nowMs: number): ClientRecord | undefined {
    return live(this.clients.get(netId), nowMs);
  }

  putTriplet(id: string, _netId: string, record: TripletRecord | null, expiresMs: number): void {
    if (record === null) this.triplets.delete(id);
    else this.triplets.set(id, { record, expiresMs });
  }

  putClient(netId: string, record: ClientRecord, expiresMs: number): void {
    this.clients.set(netId, { record, expiresMs });
  }

  waitUntilReady(): Promise<void> {
    return this.ping();
  }

  ping(): Promise<void> {
    return this.closed ? Promise.reject(new Error("memory store is closed")) : Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private sweep(nowMs: number): void {
    for (const map of [this.triplets, this.clients] as Map<string, Expiring<unknown>>[]) {
      for (const [key, entry] of map) if (entry.expiresMs <= nowMs) map.delete(key);
    }
  }
}

function live<T>(entry: Expiring<T> | undefined, nowMs: number): T | undefined {
  return entry && entry.expiresMs > nowMs ? entry.record : undefined;
}
