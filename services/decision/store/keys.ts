/**
 * Every store key comes from here. Keys are hashes (no raw address is ever stored), of fixed
 * length, carry the schema version, and are hash-tagged by client network so that a triplet,
 * its client's auto-whitelist record and the network's greytrap block share one Redis Cluster
 * slot (one script touches them together).
 */
import { hash } from "node:crypto";
import type { OutboundPair, TripletQuery } from "./store";

/** Version of the Redis key layout (in every key name); bump it when records change shape. */
export const REDIS_KEY_SCHEMA = 1;

/** Network ids are cached: a busy MX sees the same client networks over and over. */
const NETWORK_ID_CACHE_ENTRIES = 65_536;
const networkIds = new Map<string, string>();

/** 16 hex characters (64 bits) naming a client network. */
export function networkId(network: string): string {
  let id = networkIds.get(network);
  if (id === undefined) {
    id = hash("sha256", `net\0${network}`, "hex").slice(0, 16);
    if (networkIds.size >= NETWORK_ID_CACHE_ENTRIES) networkIds.clear();
    networkIds.set(network, id);
  }
  return id;
}

/** 32 hex characters (128 bits) naming a triplet. */
export function tripletId(query: Pick<TripletQuery, "network" | "sender" | "recipient">): string {
  return hash("sha256", `triplet\0${query.network}\0${query.sender}\0${query.recipient}`, "hex").slice(0, 32);
}

/** 32 hex characters naming an outbound pair: a reply from `external` to `local`. */
export function outboundId(pair: OutboundPair): string {
  return hash("sha256", `outbound\0${pair.external}\0${pair.local}`, "hex").slice(0, 32);
}

/** Redis key names under a deployment prefix. */
export class RedisKeys {
  private readonly base: string;

  constructor(readonly prefix: string) {
    this.base = `${prefix}v${REDIS_KEY_SCHEMA}:`;
  }

  /** Hash of one triplet: fields f (first seen ms), p (passed ms), l (last seen ms). */
  triplet(netId: string, id: string): string {
    return `${this.base}{${netId}}:t:${id}`;
  }

  /** Hash of one client network: fields n (counted deliveries), c (last counted ms), l (last seen ms). */
  client(netId: string): string {
    return `${this.base}{${netId}}:c`;
  }

  /** String set while the network is greytrapped (value: the end, epoch ms; expires then). */
  block(netId: string): string {
    return `${this.base}{${netId}}:b`;
  }

  /** Pattern of every key of one network (all in one slot). */
  network(netId: string): string {
    return `${this.base}{${netId}}:*`;
  }

  /** String set while an outbound pair is remembered. */
  outbound(id: string): string {
    return `${this.base}o:${id}`;
  }

  /** Hash of list entries: field "<kind>\0<value>", value the entry as JSON. */
  listEntries(): string {
    return `${this.base}{lists}:entries`;
  }

  /** Counter bumped on every list change. */
  listsVersion(): string {
    return `${this.base}{lists}:version`;
  }

  /** Pattern matching every key of this deployment. */
  all(): string {
    return `${this.base}*`;
  }
}
