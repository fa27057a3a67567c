/**
 * The greylisting state machine; pure, clock injected as `nowMs`. The SQLite and memory stores
 * run it inside a transaction; the Redis store runs the same rules in store/lua/decide.lua, and
 * the store conformance suite holds the two to the same transitions.
 */

/** Timing rules of the greylist, in milliseconds. */
export interface GreylistPolicy {
  /** A new triplet is deferred this long (default 300 s). */
  readonly delayMs: number;
  /** A retry passes only within this long after first seen (default 48 h). */
  readonly retryWindowMs: number;
  /** A passed triplet or whitelisted client is remembered this long after last use (default 35 d). */
  readonly maxAgeMs: number;
  /** Counted deliveries after which the client network is whitelisted; 0 = off (default 5). */
  readonly autoWhitelistPasses: number;
  /** At most one delivery per client network is counted in this interval (default 1 h). */
  readonly autoWhitelistCountIntervalMs: number;
}

/** What the store keeps for one triplet. */
export interface TripletRecord {
  /** When the first attempt was seen (epoch ms). */
  readonly firstSeenMs: number;
  /** When it passed greylisting (epoch ms); 0 while pending. */
  readonly passedMs: number;
  /** Last attempt (epoch ms). */
  readonly lastSeenMs: number;
}

/** What the store keeps for one client network. */
export interface ClientRecord {
  /** Deliveries counted towards the auto-whitelist. */
  readonly passes: number;
  /** When a delivery was last counted (epoch ms). */
  readonly lastCountedMs: number;
  /** Last accepted delivery (epoch ms). */
  readonly lastSeenMs: number;
}

/** The outcome of one decision. Codes are shared with decide.lua. */
export type Outcome =
  | { readonly kind: "new_triplet"; readonly retryAfterMs: number }
  | { readonly kind: "too_early"; readonly retryAfterMs: number }
  | { readonly kind: "passed_after_retry"; readonly delayedMs: number }
  | { readonly kind: "known_triplet" }
  | { readonly kind: "client_auto_whitelisted" };

/** The outcome and the records to write back, each with its time to live. */
export interface Transition {
  readonly outcome: Outcome;
  /** New triplet record, `null` to delete it, `undefined` to leave it untouched. */
  readonly triplet: TripletRecord | null | undefined;
  readonly tripletTtlMs: number;
  /** New client record, or `undefined` to leave it untouched. */
  readonly client: ClientRecord | undefined;
  readonly clientTtlMs: number;
}

/**
 * A passed triplet unused for max-age is forgotten. Every bound is exclusive (a record lasts
 * [start, start + span)), as the stores' expiry is: all stores agree to the millisecond.
 */
function stale(triplet: TripletRecord, nowMs: number, policy: GreylistPolicy): boolean {
  return triplet.passedMs > 0 && nowMs - triplet.lastSeenMs >= policy.maxAgeMs;
}

/** Counts an accepted delivery towards the client auto-whitelist, at most once per interval. */
function countDelivery(client: ClientRecord | undefined, nowMs: number, policy: GreylistPolicy): ClientRecord {
  if (client && nowMs - client.lastCountedMs < policy.autoWhitelistCountIntervalMs) {
    return { ...client, lastSeenMs: nowMs };
  }
  return { passes: (client?.passes ?? 0) + 1, lastCountedMs: nowMs, lastSeenMs: nowMs };
}

/**
 * Decides one attempt from the stored records (or undefined when there are none); `singleUse` marks a null-sender triplet whose pass is consumed by one message.
 */
export function verdict(
  storedTriplet: TripletRecord | undefined,
  storedClient: ClientRecord | undefined,
  nowMs: number,
  policy: GreylistPolicy,
  singleUse: boolean,
): Transition {
  // Expiry is decided here from the records' own times; store TTLs only collect the garbage.
  const triplet = storedTriplet && !stale(storedTriplet, nowMs, policy) ? storedTriplet : undefined;
  const client = storedClient && nowMs - storedClient.lastSeenMs < policy.maxAgeMs ? storedClient : undefined;
  const base = { tripletTtlMs: policy.maxAgeMs, clientTtlMs: policy.maxAgeMs };
  if (policy.autoWhitelistPasses > 0 && client && client.passes >= policy.autoWhitelistPasses) {
    const refreshed = { ...client, lastSeenMs: nowMs };
    return { ...base, outcome: { kind: "client_auto_whitelisted" }, triplet: undefined, client: refreshed };
  }
  if (triplet && triplet.passedMs > 0) {
    const refreshed = { ...triplet, lastSeenMs: nowMs };
    return {
      ...base,
      outcome: { kind: "known_triplet" },
      triplet: refreshed,
      client: countDelivery(client, nowMs, policy),
    };
  }
  const ageMs = triplet ? nowMs - triplet.firstSeenMs : -1;
  if (!triplet || ageMs >= policy.retryWindowMs || ageMs < 0) {
    // Unknown, or retried after the window (start over), or first seen "in the future" after a
    // clock step: record now as first seen.
    const fresh = { firstSeenMs: nowMs, passedMs: 0, lastSeenMs: nowMs };
    return {
      ...base,
      outcome: { kind: "new_triplet", retryAfterMs: policy.delayMs },
      triplet: fresh,
      tripletTtlMs: policy.retryWindowMs,
      client: undefined,
    };
  }
  if (ageMs < policy.delayMs) {
    // Too early: the first-seen time is kept, so hammering does not extend the delay.
    const seen = { ...triplet, lastSeenMs: nowMs };
    return {
      ...base,
      outcome: { kind: "too_early", retryAfterMs: policy.delayMs - ageMs },
      triplet: seen,
      tripletTtlMs: triplet.firstSeenMs + policy.retryWindowMs - nowMs,
      client: undefined,
    };
  }
  const passed = { firstSeenMs: triplet.firstSeenMs, passedMs: nowMs, lastSeenMs: nowMs };
  return {
    ...base,
    outcome: { kind: "passed_after_retry", delayedMs: ageMs },
    triplet: singleUse ? null : passed,
    client: countDelivery(client, nowMs, policy),
  };
}
