/**
 * The engine's view of a store: one atomic decision per call. Stores implement this; the engine
 * never imports a store implementation.
 */
import type { GreylistPolicy, Outcome } from "../domain/verdict";

/** A normalised triplet to decide. Stores hash it (store/keys.ts): no raw address is stored. */
export interface TripletQuery {
  /** Client network, e.g. "192.0.2.0/24". */
  readonly network: string;
  /** Normalised envelope sender; "" for the null sender. */
  readonly sender: string;
  /** Normalised envelope recipient. */
  readonly recipient: string;
  /** The pass is consumed by one message (the null sender): no "known" state is kept. */
  readonly singleUse: boolean;
}

/** A store's answer: the outcome and the clock reading it was decided at (epoch ms). */
export interface StoreDecision {
  readonly outcome: Outcome;
  readonly nowMs: number;
}

/** Kinds of store, as named in metrics and logs. */
export type StoreKind = "memory" | "sqlite" | "redis";

/** Greylist state behind one interface; every implementation passes test/conformance. */
export interface GreylistStore {
  readonly kind: StoreKind;
  /** Reads, decides and writes one triplet atomically (one round trip for Redis). */
  decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision>;
  /** Resolves once the store is connected; rejects if that takes longer than `timeoutMs`. */
  waitUntilReady(timeoutMs: number): Promise<void>;
  /** Resolves when the store answers; rejects when it is unreachable. */
  ping(): Promise<void>;
  /** Releases connections and files; later calls fail. */
  close(): Promise<void>;
}
