import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type ClientRecord,
  type GreylistPolicy,
  type TripletRecord,
  verdict,
} from "../../services/decision/domain/verdict";

const S = 1000;
const H = 3600 * S;
const D = 24 * H;
const policy: GreylistPolicy = {
  delayMs: 300 * S,
  retryWindowMs: 48 * H,
  maxAgeMs: 35 * D,
  autoWhitelistPasses: 5,
  autoWhitelistCountIntervalMs: H,
};
const T0 = 1_800_000_000_000;

describe("verdict: every transition", () => {
  const pending: TripletRecord = { firstSeenMs: T0, passedMs: 0, lastSeenMs: T0 };
  const passed: TripletRecord = { firstSeenMs: T0, passedMs: T0 + 400 * S, lastSeenMs: T0 + 400 * S };
  const rows: {
    name: string;
    triplet?: TripletRecord;
    client?: ClientRecord;
    now: number;
    singleUse?: boolean;
    outcome: object;
    triplet_after?: TripletRecord | null;
    ttl?: number;
    client_after?: ClientRecord;
  }[] = [
    {
      name: "unknown -> record first seen and defer for the delay",
      now: T0,
      outcome: { kind: "new_triplet", retryAfterMs: 300 * S },
      triplet_after: { firstSeenMs: T0, passedMs: 0, lastSeenMs: T0 },
      ttl: 48 * H,
    },
    {
      name: "seen, younger than the delay -> defer, first seen kept",
      triplet: pending,
      now: T0 + 100 * S,
      outcome: { kind: "too_early", retryAfterMs: 200 * S },
      triplet_after: { firstSeenMs: T0, passedMs: 0, lastSeenMs: T0 + 100 * S },
      ttl: 48 * H - 100 * S,
    },
    {
      name: "one millisecond before the delay -> still too early",
      triplet: pending,
      now: T0 + 300 * S - 1,
      outcome: { kind: "too_early", retryAfterMs: 1 },
    },
    {
      name: "exactly at the delay -> pass",
      triplet: pending,
      now: T0 + 300 * S,
      outcome: { kind: "passed_after_retry", delayedMs: 300 * S },
      triplet_after: { firstSeenMs: T0, passedMs: T0 + 300 * S, lastSeenMs: T0 + 300 * S },
      ttl: 35 * D,
      client_after: { passes: 1, lastCountedMs: T0 + 300 * S, lastSeenMs: T0 + 300 * S },
    },
    {
      name: "in the last millisecond of the retry window -> pass",
      triplet: pending,
      now: T0 + 48 * H - 1,
      outcome: { kind: "passed_after_retry", delayedMs: 48 * H - 1 },
    },
    {
      name: "at the end of the retry window (bounds are exclusive, as store expiry is) -> start over",
      triplet: pending,
      now: T0 + 48 * H,
      outcome: { kind: "new_triplet", retryAfterMs: 300 * S },
      triplet_after: { firstSeenMs: T0 + 48 * H, passedMs: 0, lastSeenMs: T0 + 48 * H },
      ttl: 48 * H,
    },
    {
      name: "passed, unused for exactly max-age -> forgotten, start over",
      triplet: passed,
      now: passed.lastSeenMs + 35 * D,
      outcome: { kind: "new_triplet", retryAfterMs: 300 * S },
    },
    {
      name: "auto-whitelisted client, quiet for exactly max-age -> forgotten",
      client: { passes: 5, lastCountedMs: T0, lastSeenMs: T0 },
      now: T0 + 35 * D,
      outcome: { kind: "new_triplet", retryAfterMs: 300 * S },
    },
    {
      name: "first seen in the future (clock stepped back) -> start over",
      triplet: pending,
      now: T0 - 10 * S,
      outcome: { kind: "new_triplet", retryAfterMs: 300 * S },
    },
    {
      name: "passed -> accept and refresh max-age",
      triplet: passed,
      now: T0 + 30 * D,
      outcome: { kind: "known_triplet" },
      triplet_after: { ...passed, lastSeenMs: T0 + 30 * D },
      ttl: 35 * D,
      client_after: { passes: 1, lastCountedMs: T0 + 30 * D, lastSeenMs: T0 + 30 * D },
    },
    {
      name: "null sender pass is single use: the record is deleted",
      triplet: pending,
      now: T0 + 301 * S,
      singleUse: true,
      outcome: { kind: "passed_after_retry", delayedMs: 301 * S },
      triplet_after: null,
    },
    {
      name: "a delivery within the count interval is not counted again",
      triplet: passed,
      client: { passes: 3, lastCountedMs: T0 + 1000 * S, lastSeenMs: T0 + 1000 * S },
      now: T0 + 1000 * S + H - 1,
      outcome: { kind: "known_triplet" },
      client_after: { passes: 3, lastCountedMs: T0 + 1000 * S, lastSeenMs: T0 + 1000 * S + H - 1 },
    },
    {
      name: "a delivery after the count interval is counted",
      triplet: passed,
      client: { passes: 3, lastCountedMs: T0, lastSeenMs: T0 },
      now: T0 + H,
      outcome: { kind: "known_triplet" },
      client_after: { passes: 4, lastCountedMs: T0 + H, lastSeenMs: T0 + H },
    },
    {
      name: "client with enough passes -> auto-whitelisted, triplet untouched",
      client: { passes: 5, lastCountedMs: T0, lastSeenMs: T0 },
      now: T0 + 10 * S,
      outcome: { kind: "client_auto_whitelisted" },
      client_after: { passes: 5, lastCountedMs: T0, lastSeenMs: T0 + 10 * S },
    },
    {
      name: "client one pass short -> greylisted as usual",
      client: { passes: 4, lastCountedMs: T0, lastSeenMs: T0 },
      now: T0,
      outcome: { kind: "new_triplet", retryAfterMs: 300 * S },
    },
  ];
  for (const row of rows) {
    it(row.name, () => {
      const t = verdict(row.triplet, row.client, row.now, policy, row.singleUse ?? false);
      assert.deepEqual(t.outcome, row.outcome);
      if (row.triplet_after !== undefined) assert.deepEqual(t.triplet, row.triplet_after);
      if (row.ttl !== undefined) assert.equal(t.tripletTtlMs, row.ttl);
      if (row.client_after !== undefined) assert.deepEqual(t.client, row.client_after);
    });
  }

  it("never writes the client record on a deferral", () => {
    const t = verdict(undefined, { passes: 2, lastCountedMs: T0, lastSeenMs: T0 }, T0, policy, false);
    assert.equal(t.client, undefined);
  });

  it("auto-whitelist off (0 passes) never whitelists a client", () => {
    const off = { ...policy, autoWhitelistPasses: 0 };
    const t = verdict(undefined, { passes: 1000, lastCountedMs: T0, lastSeenMs: T0 }, T0, off, false);
    assert.equal(t.outcome.kind, "new_triplet");
  });

  it("walks the life of a triplet with a moving clock", () => {
    let triplet: TripletRecord | undefined;
    let client: ClientRecord | undefined;
    const step = (now: number) => {
      const t = verdict(triplet, client, now, policy, false);
      if (t.triplet !== undefined) triplet = t.triplet ?? undefined;
      if (t.client !== undefined) client = t.client;
      return t.outcome.kind;
    };
    assert.equal(step(T0), "new_triplet");
    assert.equal(step(T0 + 60 * S), "too_early");
    assert.equal(step(T0 + 299 * S), "too_early");
    assert.equal(step(T0 + 301 * S), "passed_after_retry");
    // Four more deliveries an hour apart bring the client to 5 counted passes.
    for (let i = 1; i <= 4; i++) assert.equal(step(T0 + 301 * S + i * H), "known_triplet");
    assert.equal(client?.passes, 5);
    assert.equal(step(T0 + 301 * S + 5 * H), "client_auto_whitelisted");
  });
});
