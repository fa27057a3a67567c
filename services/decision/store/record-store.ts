/**
 * The decision step shared by the stores that run the TypeScript state machine (SQLite, memory):
 * a greytrap block first, then verdict() over the triplet and client records, written back with
 * expiry times, then an outbound pair. Callers wrap it in their own transaction.
 */
import { type ClientRecord, type GreylistPolicy, type TripletRecord, verdict } from "../domain/verdict";
import { networkId, outboundId, tripletId } from "./keys";
import type { Inspection, StoreDecision, TripletQuery } from "./store";

/** A triplet record with its expiry time. */
export type StoredTriplet = TripletRecord & { readonly expiresMs: number };

/** Record access inside one transaction; reads return only unexpired records. */
export interface RecordTransaction {
  getTriplet(id: string, nowMs: number): StoredTriplet | undefined;
  getClient(netId: string, nowMs: number): ClientRecord | undefined;
  /** When the network's greytrap block ends, or 0. */
  getBlock(netId: string, nowMs: number): number;
  hasOutbound(id: string, nowMs: number): boolean;
  /** Writes (or with `null` deletes) a triplet record that expires at `expiresMs`. */
  putTriplet(id: string, netId: string, record: TripletRecord | null, expiresMs: number): void;
  putClient(netId: string, record: ClientRecord, expiresMs: number): void;
}

/** The outbound pair id a query would match: a reply from its sender to its recipient. */
export function replyPairId(query: TripletQuery): string {
  return outboundId({ local: query.recipient, external: query.sender });
}

/** Decides `query` at `nowMs` against the records reachable through `tx`. */
export function decideInTransaction(
  tx: RecordTransaction,
  query: TripletQuery,
  policy: GreylistPolicy,
  nowMs: number,
): StoreDecision {
  const netId = networkId(query.network);
  if (tx.getBlock(netId, nowMs) > 0) return { outcome: { kind: "network_blocked" }, nowMs };
  const id = tripletId(query);
  const transition = verdict(tx.getTriplet(id, nowMs), tx.getClient(netId, nowMs), nowMs, policy, query.singleUse);
  if (transition.triplet !== undefined) {
    tx.putTriplet(id, netId, transition.triplet, nowMs + transition.tripletTtlMs);
  }
  if (transition.client !== undefined) tx.putClient(netId, transition.client, nowMs + transition.clientTtlMs);
  // A reply to a local user's mail is accepted whatever the triplet's state; the triplet is
  // recorded as usual all the same, as the Redis store (which reads the pair alongside) does.
  if (query.outbound && tx.hasOutbound(replyPairId(query), nowMs))
    return { outcome: { kind: "outbound_reply" }, nowMs };
  return { outcome: transition.outcome, nowMs };
}

/** Reads what the store holds for `query`, changing nothing. */
export function inspectInTransaction(tx: RecordTransaction, query: TripletQuery, nowMs: number): Inspection {
  const netId = networkId(query.network);
  return {
    nowMs,
    triplet: tx.getTriplet(tripletId(query), nowMs),
    client: tx.getClient(netId, nowMs),
    blockedUntilMs: tx.getBlock(netId, nowMs),
    outbound: tx.hasOutbound(replyPairId(query), nowMs),
  };
}
