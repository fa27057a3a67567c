/**
 * Every store key comes from here. Keys are hashes (no raw address is ever stored), of fixed
 * length, carry the schema version, and are hash-tagged by client network so that a triplet
 * and its client's auto-whitelist record share one Redis Cluster slot.
 */
import { createHash } from "node:crypto";
import type { TripletQuery } from "./store";

/** Schema version of stored records; bump it when their layout changes. */
export const SCHEMA_VERSION = 1;

/** Network ids are cached: a busy MX sees the same client networks over and over. */
const NETWORK_ID_CACHE_ENTRIES = 65_536;
const networkIds = new Map<string, string>();

/** 16 hex characters (64 bits) naming a client network. */
export function networkId(network: string): string {
  let id = networkIds.get(network);
  if (id === undefined) {
    id = createHash("sha256").update(`net\0${network}`).digest("hex").slice(0, 16);
    if (networkIds.size >= NETWORK_ID_CACHE_ENTRIES) networkIds.clear();
    networkIds.set(network, id);
  }
  return id;
}

/** 32 hex characters (128 bits) naming a triplet. */
export function tripletId(query: TripletQuery): string {
  return createHash("sha256")
    .update(`triplet\0${query.network}\0${query.sender}\0${query.recipient}`)
    .digest("hex")
    .slice(0, 32);
}

/** Redis key names under a deployment prefix. */
export class RedisKeys {
  constructor(private readonly prefix: string) {}

  /** Hash of one triplet: fields f (first seen ms), p (passed ms), l (last seen ms). */
  triplet(netId: string, id: string): string {
    return `${this.prefix}v${SCHEMA_VERSION}:{${netId}}:t:${id}`;
  }

  /** Hash of one client network: fields n (counted deliveries), c (last counted ms), l (last seen ms). */
  client(netId: string): string {
    return `${this.prefix}v${SCHEMA_VERSION}:{${netId}}:c`;
  }

  /** Pattern matching every key of this deployment (for tests and admin scans). */
  all(): string {
    return `${this.prefix}v${SCHEMA_VERSION}:*`;
  }
}
