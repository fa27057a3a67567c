/**
 * The store conformance suite: the same transitions, run against every store. A store passes
 * only if it decides exactly as verdict() specifies.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { GreylistPolicy } from "../../services/decision/domain/verdict";
import type { GreylistStore, TripletQuery } from "../../services/decision/store/store";
import { DEFAULT_POLICY } from "../support/engine";

/** A store under test and the means to move its clock. */
export interface StoreUnderTest {
  readonly store: GreylistStore;
  /** A second handle on the same state (another connection or process view), for races. */
  readonly twin?: GreylistStore;
  advance(ms: number): void;
  /**
   * Real milliseconds that may pass between the test's clock and the store's (a shared store
   * reads its own clock): timing assertions allow this much.
   */
  readonly slackMs: number;
}

const S = 1000;
const H = 3600 * S;
const D = 24 * H;
let counter = 0;

/** A triplet no other test uses. */
function fresh(overrides: Partial<TripletQuery> = {}): TripletQuery {
  counter++;
  return {
    network: `10.${counter % 250}.${Math.floor(counter / 250)}.0/24`,
    sender: `sender${counter}@example.org`,
    recipient: `rcpt${counter}@example.com`,
    singleUse: false,
    outbound: false,
    ...overrides,
  };
}

/** Registers the suite for one store. `open` runs once before the tests. */
export function storeConformance(name: string, open: () => Promise<StoreUnderTest>, close: () => Promise<void>): void {
  describe(`store conformance: ${name}`, () => {
    let sut: StoreUnderTest;
    const decide = async (query: TripletQuery, policy: GreylistPolicy = DEFAULT_POLICY) =>
      (await sut.store.decide(query, policy)).outcome;
    const near = (actual: number, expected: number) =>
      assert.ok(
        actual <= expected && actual >= expected - sut.slackMs,
        `${actual} should be within ${sut.slackMs} ms below ${expected}`,
      );

    it("opens", async () => {
      sut = await open();
      await sut.store.ping();
    });

    it("unknown -> new triplet, deferred for the delay", async () => {
      const outcome = await decide(fresh());
      assert.deepEqual(outcome, { kind: "new_triplet", retryAfterMs: 300 * S });
    });

    it("an early retry is deferred without resetting the clock", async () => {
      const q = fresh();
      await decide(q);
      sut.advance(100 * S);
      const early = await decide(q);
      assert.equal(early.kind, "too_early");
      if (early.kind === "too_early") near(early.retryAfterMs, 200 * S);
      sut.advance(150 * S);
      const again = await decide(q);
      assert.equal(again.kind, "too_early");
      if (again.kind === "too_early") near(again.retryAfterMs, 50 * S);
      sut.advance(51 * S);
      const passed = await decide(q);
      assert.equal(passed.kind, "passed_after_retry");
      if (passed.kind === "passed_after_retry") {
        const delayed = passed.delayedMs;
        assert.ok(delayed >= 301 * S && delayed <= 301 * S + sut.slackMs, `delayed ${delayed} ms`);
      }
    });

    it("passed -> known, and each use refreshes the max-age", async () => {
      const q = fresh();
      await decide(q);
      sut.advance(301 * S);
      assert.equal((await decide(q)).kind, "passed_after_retry");
      sut.advance(30 * D);
      assert.deepEqual(await decide(q), { kind: "known_triplet" });
      sut.advance(30 * D); // 60 days after the pass, 30 after the last use
      assert.deepEqual(await decide(q), { kind: "known_triplet" });
    });

    it("a passed triplet unused for longer than max-age starts over", async () => {
      const q = fresh();
      await decide(q);
      sut.advance(301 * S);
      await decide(q);
      sut.advance(35 * D + S);
      assert.equal((await decide(q)).kind, "new_triplet");
    });

    it("a retry after the retry window starts over", async () => {
      const q = fresh();
      await decide(q);
      sut.advance(48 * H + S);
      assert.equal((await decide(q)).kind, "new_triplet");
      sut.advance(100 * S);
      assert.equal((await decide(q)).kind, "too_early", "the new first-seen time counts");
    });

    it("triplets differ by network, sender and recipient", async () => {
      const q = fresh();
      await decide(q);
      sut.advance(301 * S);
      assert.equal((await decide(q)).kind, "passed_after_retry");
      assert.equal((await decide({ ...q, network: "10.255.255.0/24" })).kind, "new_triplet");
      assert.equal((await decide({ ...q, sender: "other@example.org" })).kind, "new_triplet");
      assert.equal((await decide({ ...q, recipient: "other@example.com" })).kind, "new_triplet");
    });

    it("a client network is auto-whitelisted after 5 deliveries, counted at most once an hour", async () => {
      const q = fresh();
      await decide(q);
      sut.advance(301 * S);
      assert.equal((await decide(q)).kind, "passed_after_retry"); // delivery 1
      for (let i = 0; i < 5; i++) assert.equal((await decide(q)).kind, "known_triplet"); // same hour: not counted
      const stranger = { ...q, sender: "stranger@example.net" };
      assert.equal((await decide(stranger)).kind, "new_triplet", "not yet whitelisted");
      for (let i = 2; i <= 5; i++) {
        sut.advance(H);
        assert.equal((await decide(q)).kind, "known_triplet"); // deliveries 2..5
      }
      assert.equal((await decide({ ...q, sender: "another@example.net" })).kind, "client_auto_whitelisted");
      assert.equal((await decide(stranger)).kind, "client_auto_whitelisted");
      const off = { ...DEFAULT_POLICY, autoWhitelistPasses: 0 };
      assert.equal((await decide({ ...q, sender: "third@example.net" }, off)).kind, "new_triplet");
    });

    it("an auto-whitelisted client is forgotten after max-age without mail", async () => {
      const q = fresh();
      await decide(q);
      sut.advance(301 * S);
      await decide(q);
      for (let i = 0; i < 4; i++) {
        sut.advance(H);
        await decide(q);
      }
      assert.equal((await decide({ ...q, sender: "x@example.net" })).kind, "client_auto_whitelisted");
      sut.advance(35 * D + S);
      assert.equal((await decide({ ...q, sender: "y@example.net" })).kind, "new_triplet");
    });

    it("a single-use pass (null sender) is consumed by one message", async () => {
      const q = fresh({ sender: "", singleUse: true });
      await decide(q);
      sut.advance(301 * S);
      assert.equal((await decide(q)).kind, "passed_after_retry");
      assert.equal((await decide(q)).kind, "new_triplet");
    });

    it("concurrent first attempts record the triplet once and agree", async () => {
      const q = fresh();
      const handles = [sut.store, sut.twin ?? sut.store];
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (handles[i % 2] as GreylistStore).decide(q, DEFAULT_POLICY)),
      );
      const kinds = outcomes.map((o) => o.outcome.kind);
      assert.equal(kinds.filter((k) => k === "new_triplet").length, 1, kinds.join(","));
      assert.equal(kinds.filter((k) => k === "too_early").length, 19, kinds.join(","));
    });

    it("closes", async () => {
      await close();
    });
  });
}
