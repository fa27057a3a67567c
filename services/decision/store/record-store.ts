/**
 * The decision step shared by the stores that run the TypeScript state machine (SQLite, memory):
 * read both records, apply verdict(), write back with expiry times. Callers wrap it in their
 * own transaction.
 */
import { type ClientRecord, type GreylistPolicy, type TripletRecord, verdict } from "../domain/verdict";
import { networkId, tripletId } from "./keys";
import type { StoreDecision, TripletQuery } from "./store";

/** Record access inside one transaction; reads return only unexpired records. */
export interface RecordTransaction {
  getTriplet(id: string, nowMs: number): TripletRecord | undefined;
  getClient(netId: string, nowMs: number): ClientRecord | undefined;
  /** Writes (or with `null` deletes) a triplet record that expires at `expiresMs`. */
  putTriplet(id: string, netId: string, record: TripletRecord | null, expiresMs: number): void;
  putClient(netId: string, record: ClientRecord, expiresMs: number): void;
}

/** Decides `query` at `nowMs` against the records reachable through `tx`. */
export function decideInTransaction(
  tx: RecordTransaction,
  query: TripletQuery,
  policy: GreylistPolicy,
  nowMs: number,
): StoreDecision {
  const netId = networkId(query.network);
  const id = tripletId(query);
  const transition = verdict(tx.getTriplet(id, nowMs), tx.getClient(netId, nowMs), nowMs, policy, query.singleUse);
  if (transition.triplet !== undefined) {
    tx.putTriplet(id, netId, transition.triplet, nowMs + transition.tripletTtlMs);
  }
  if (transition.client !== undefined) tx.putClient(netId, transition.client, nowMs + transition.clientTtlMs);
  return { outcome: transition.outcome, nowMs };
}
