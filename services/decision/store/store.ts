/**
 * The engine's view of a store: one atomic decision per call, plus the fleet-wide facts around
 * it (greytrap blocks, outbound pairs, list entries) and the administrator's operations. Stores
 * implement this; the engine never imports a store implementation.
 */
import type { ListEntryValue, ListKindName } from "../domain/lists";
import type { ClientRecord, GreylistPolicy, Outcome, TripletRecord } from "../domain/verdict";

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
  /** Also answer "outbound_reply" when a local user wrote to this sender before. */
  readonly outbound: boolean;
}

/** Outcomes beyond the triplet's own: the network is greytrapped, or the mail is a reply. */
export type StoreOutcome = Outcome | { readonly kind: "network_blocked" } | { readonly kind: "outbound_reply" };

/** A store's answer: the outcome and the clock reading it was decided at (epoch ms). */
export interface StoreDecision {
  readonly outcome: StoreOutcome;
  readonly nowMs: number;
}

/** One outgoing pair: the local user's address and the external address it wrote to. */
export interface OutboundPair {
  /** Normalised as a recipient (it will be the recipient of the reply). */
  readonly local: string;
  /** Normalised as a sender (it will send the reply). */
  readonly external: string;
}

/** A list entry's identity. */
export interface EntryKey {
  readonly kind: ListKindName;
  readonly value: string;
}

/** What the store holds about one triplet and its network, read without changing anything. */
export interface Inspection {
  readonly nowMs: number;
  readonly triplet: (TripletRecord & { readonly expiresMs: number }) | undefined;
  readonly client: ClientRecord | undefined;
  /** When the network's greytrap block ends (epoch ms), 0 when it is not blocked. */
  readonly blockedUntilMs: number;
  readonly outbound: boolean;
}

/** One record of the whole state, for export and import; ids are the store's hashes. */
export type StateRecord =
  | {
      readonly type: "triplet";
      readonly id: string;
      readonly networkId: string;
      readonly firstSeenMs: number;
      readonly passedMs: number;
      readonly lastSeenMs: number;
      readonly expiresMs: number;
    }
  | {
      readonly type: "client";
      readonly networkId: string;
      readonly passes: number;
      readonly lastCountedMs: number;
      readonly lastSeenMs: number;
      readonly expiresMs: number;
    }
  | { readonly type: "block"; readonly networkId: string; readonly expiresMs: number }
  | { readonly type: "outbound"; readonly id: string; readonly expiresMs: number }
  | { readonly type: "entry"; readonly entry: ListEntryValue };

/** Counts of the greylist state. */
export interface StoreStats {
  readonly pendingTriplets: number;
  readonly passedTriplets: number;
  readonly autoWhitelistedClients: number;
  readonly greytrappedNetworks: number;
  readonly outboundPairs: number;
}

/** Kinds of store, as named in metrics and logs. */
export type StoreKind = "memory" | "sqlite" | "redis";

/** Greylist state behind one interface; every implementation passes test/conformance. */
export interface GreylistStore {
  readonly kind: StoreKind;
  /** Reads, decides and writes one triplet atomically (one round trip for Redis). */
  decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision>;
  /** Blocks a client network for `durationMs` (a greytrap was hit). */
  blockNetwork(network: string, durationMs: number): Promise<void>;
  /** Remembers outgoing pairs for `ttlMs`, so replies are accepted at once. */
  learnOutbound(pairs: readonly OutboundPair[], ttlMs: number): Promise<void>;
  /** A number that changes whenever a list entry changes (cheap: polled every second). */
  listsVersion(): Promise<number>;
  /** Every stored list entry, expired ones included (the matcher ignores those). */
  listEntries(): Promise<ListEntryValue[]>;
  /** Adds or replaces entries (by kind and value). */
  putEntries(entries: readonly ListEntryValue[]): Promise<void>;
  /** Removes entries; returns how many existed. */
  removeEntries(keys: readonly EntryKey[]): Promise<number>;
  /**
   * Counts of the state for metrics, cheap enough to run every minute: exact where counting is
   * cheap (SQLite, memory), estimated from a random sample of keys on Redis.
   */
  sampleStats(autoWhitelistPasses: number): Promise<StoreStats>;
  /** Resolves once the store is connected; rejects if that takes longer than `timeoutMs`. */
  waitUntilReady(timeoutMs: number): Promise<void>;
  /** Resolves when the store answers; rejects when it is unreachable. */
  ping(): Promise<void>;
  /** Releases connections and files; later calls fail. */
  close(): Promise<void>;
}

/** The administrator's operations on the greylist itself. */
export interface AdminStore {
  /** Reads what is stored about a triplet, its network and its outbound pair; changes nothing. */
  inspect(query: TripletQuery): Promise<Inspection>;
  /** Forgets one triplet; false when there was none. */
  deleteTriplet(query: TripletQuery): Promise<boolean>;
  /** Forgets a network's triplets, auto-whitelist record and greytrap block; returns the count. */
  flushNetwork(network: string): Promise<number>;
  /** Counts the state (scans it: on demand only). `autoWhitelistPasses` says who counts as whitelisted. */
  stats(autoWhitelistPasses: number): Promise<StoreStats>;
  /** Every unexpired record. */
  exportRecords(): AsyncIterable<StateRecord>;
  /**
   * Writes records with their expiry times, except where the store holds the same record as new
   * or newer (restoreOrder): a restore never replaces newer state. Returns how many were
   * written, had expired, and were kept from the store.
   */
  importRecords(records: AsyncIterable<StateRecord>): Promise<ImportResult>;
}

/** What an import did with its records. */
export interface ImportResult {
  readonly imported: number;
  readonly expired: number;
  /** Not written: the store held the same record as new or newer. */
  readonly kept: number;
}

/**
 * How new a record is, to compare a dump's record with the store's: a triplet or client record
 * by its last-seen time, a greytrap block or outbound pair by its end, a list entry by its
 * creation time. On a tie the store's record stays.
 */
export function restoreOrder(record: StateRecord): number {
  switch (record.type) {
    case "triplet":
    case "client":
      return record.lastSeenMs;
    case "block":
    case "outbound":
      return record.expiresMs;
    case "entry":
      return record.entry.createdAtMs;
  }
}

/** A complete store. */
export type Store = GreylistStore & AdminStore;
