/**
 * The store conformance suite: the same transitions, run against every store. A store passes
 * only if it decides exactly as verdict() specifies.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ListEntryValue } from "../../services/decision/domain/lists";
import type { GreylistPolicy } from "../../services/decision/domain/verdict";
import { networkId, outboundId, tripletId } from "../../services/decision/store/keys";
import type { GreylistStore, StateRecord, Store, TripletQuery } from "../../services/decision/store/store";
import { DEFAULT_POLICY } from "../support/engine";

/** A store under test and the means to move its clock. */
export interface StoreUnderTest {
  readonly store: Store;
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

const entry = (kind: ListEntryValue["kind"], value: string, expiresAtMs = 0): ListEntryValue => ({
  kind,
  value,
  expiresAtMs,
  comment: `test ${value}`,
  createdAtMs: 1_800_000_000_000,
  source: "admin",
});

async function collect(records: AsyncIterable<StateRecord>): Promise<StateRecord[]> {
  const all: StateRecord[] = [];
  for await (const record of records) all.push(record);
  return all;
}

/** Registers the suite for one store. `open` runs once before the tests; `openEmpty` opens an empty store of the kind. */
export function storeConformance(
  name: string,
  open: () => Promise<StoreUnderTest>,
  close: () => Promise<void>,
  openEmpty: () => Promise<Store>,
): void {
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
      const handles: GreylistStore[] = [sut.store, sut.twin ?? sut.store];
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (handles[i % 2] as GreylistStore).decide(q, DEFAULT_POLICY)),
      );
      const kinds = outcomes.map((o) => o.outcome.kind);
      assert.equal(kinds.filter((k) => k === "new_triplet").length, 1, kinds.join(","));
      assert.equal(kinds.filter((k) => k === "too_early").length, 19, kinds.join(","));
    });

    it("a greytrap block stops every decision of the network until it ends, writing nothing", async () => {
      const q = fresh();
      await sut.store.blockNetwork(q.network, 3_600_000);
      assert.deepEqual(await decide(q), { kind: "network_blocked" });
      assert.deepEqual(await decide({ ...q, recipient: "other@example.com" }), { kind: "network_blocked" });
      assert.equal((await decide({ ...q, network: "10.254.254.0/24" })).kind, "new_triplet");
      sut.advance(3_600_000 + sut.slackMs + S);
      assert.equal((await decide(q)).kind, "new_triplet", "the block ended and the blocked attempt was not recorded");
    });

    it("answers a reply to a local user's outgoing mail at once, only when asked, until max-age", async () => {
      const q = fresh({ outbound: true });
      await sut.store.learnOutbound([{ local: q.recipient, external: q.sender }], 10 * D);
      assert.deepEqual(await decide(q), { kind: "outbound_reply" });
      // The triplet was recorded all the same: without the pair it is an early retry.
      assert.equal((await decide({ ...q, outbound: false })).kind, "too_early");
      assert.equal((await decide({ ...q, sender: "someone-else@example.org" })).kind, "new_triplet");
      sut.advance(10 * D + sut.slackMs + S);
      assert.notEqual((await decide(q)).kind, "outbound_reply");
    });

    it("keeps list entries with a version that changes on every change", async () => {
      const before = await sut.store.listsVersion();
      const added = [
        entry("sender_whitelist", `w${counter}@example.org`),
        entry("greytrap", `t${counter}@example.com`, 42),
      ];
      await sut.store.putEntries(added);
      const afterPut = await sut.store.listsVersion();
      assert.notEqual(afterPut, before);
      const stored = await sut.store.listEntries();
      for (const e of added)
        assert.deepEqual(
          stored.find((s) => s.kind === e.kind && s.value === e.value),
          e,
        );
      assert.equal(await sut.store.removeEntries([{ kind: "greytrap", value: `t${counter}@example.com` }]), 1);
      assert.equal(await sut.store.removeEntries([{ kind: "greytrap", value: "never-there@example.com" }]), 0);
      assert.notEqual(await sut.store.listsVersion(), afterPut);
      assert.equal(
        (await sut.store.listEntries()).filter((e) => e.kind === "greytrap" && e.value === `t${counter}@example.com`)
          .length,
        0,
      );
    });

    it("inspects what a decision would read, without writing", async () => {
      const q = fresh();
      const empty = await sut.store.inspect(q);
      assert.equal(empty.triplet, undefined);
      assert.equal(empty.blockedUntilMs, 0);
      assert.equal((await decide(q)).kind, "new_triplet", "inspect wrote nothing");
      const seen = await sut.store.inspect(q);
      assert.ok(
        seen.triplet && seen.triplet.passedMs === 0 && Math.abs(seen.triplet.firstSeenMs - seen.nowMs) <= sut.slackMs,
      );
      assert.ok(seen.triplet.expiresMs > seen.nowMs + 47 * H);
    });

    it("deletes one triplet, and flushes a whole network", async () => {
      const q = fresh();
      await decide(q);
      assert.equal(await sut.store.deleteTriplet(q), true);
      assert.equal(await sut.store.deleteTriplet(q), false);
      assert.equal((await decide(q)).kind, "new_triplet");
      sut.advance(301 * S);
      await decide(q); // passes: a client record exists now
      await decide({ ...q, recipient: "second@example.com" });
      await sut.store.blockNetwork(q.network, H);
      assert.equal(await sut.store.flushNetwork(q.network), 4, "two triplets, the client record, the block");
      assert.equal((await decide(q)).kind, "new_triplet");
    });

    it("exports every record and an import into an empty store reproduces every decision", async () => {
      const pending = fresh();
      const passed = fresh();
      await decide(pending);
      await decide(passed);
      sut.advance(301 * S);
      await decide(passed);
      const blocked = fresh();
      await sut.store.blockNetwork(blocked.network, H);
      const reply = fresh({ outbound: true });
      await sut.store.learnOutbound([{ local: reply.recipient, external: reply.sender }], D);
      const records = await collect(sut.store.exportRecords());
      assert.ok(records.some((r) => r.type === "triplet") && records.some((r) => r.type === "entry"));
      const target = await openEmpty();
      try {
        const result = await target.importRecords(
          (async function* () {
            yield* records;
          })(),
        );
        assert.equal(result.imported + result.expired, records.length);
        for (const q of [pending, passed, blocked, reply]) {
          const [a, b] = await Promise.all([sut.store.inspect(q), target.inspect(q)]);
          assert.equal(b.triplet?.firstSeenMs, a.triplet?.firstSeenMs);
          assert.equal(b.triplet?.passedMs, a.triplet?.passedMs);
          assert.equal(b.blockedUntilMs > 0, a.blockedUntilMs > 0);
          assert.equal(b.outbound, a.outbound);
        }
        assert.equal((await target.listEntries()).length, (await sut.store.listEntries()).length);
      } finally {
        await target.close();
      }
    });

    it("an export paused part-way (its client slow to read) holds up no decision, then reads on", async () => {
      for (let i = 0; i < 3; i++) await decide(fresh());
      const exporting = sut.store.exportRecords()[Symbol.asyncIterator]();
      assert.equal((await exporting.next()).done, false);
      // While the export waits for its reader, decisions and other writes go on as usual.
      assert.equal((await decide(fresh())).kind, "new_triplet");
      await sut.store.blockNetwork(fresh().network, H);
      let rest = 0;
      for (let next = await exporting.next(); !next.done; next = await exporting.next()) rest++;
      assert.ok(rest >= 2, `the export read on: ${rest} more records`);
    });

    it("a restore keeps the store's newer records and replaces older ones, so it can run twice", async () => {
      const q = fresh();
      const trapped = fresh().network; // a blocked network decides nothing: not q's
      const pair = { local: `local${counter}@example.com`, external: `far${counter}@example.org` };
      const listed = entry("sender_whitelist", `restore${counter}@example.org`);
      const ours = new Set([
        `triplet ${tripletId(q)}`,
        `client ${networkId(q.network)}`,
        `block ${networkId(trapped)}`,
        `outbound ${outboundId(pair)}`,
        `entry ${listed.value}`,
      ]);
      const keyOf = (r: StateRecord) =>
        `${r.type} ${r.type === "entry" ? r.entry.value : "id" in r ? r.id : r.networkId}`;
      const mine = async (store: Store): Promise<StateRecord[]> =>
        (await collect(store.exportRecords()))
          .filter((r) => ours.has(keyOf(r)))
          .sort((a, b) => a.type.localeCompare(b.type));
      /** What restoreOrder compares, and whether a triplet has passed. */
      const described = (r: StateRecord): string => {
        switch (r.type) {
          case "triplet":
            return `triplet l=${r.lastSeenMs} passed=${r.passedMs > 0}`;
          case "client":
            return `client l=${r.lastSeenMs}`;
          case "entry":
            return `entry created=${r.entry.createdAtMs} ${r.entry.comment}`;
          default:
            return `${r.type} ends in ${Math.round(r.expiresMs / 60_000)} min`;
        }
      };
      const summary = (records: StateRecord[]) => records.map(described);
      const replay = (records: StateRecord[]) =>
        (async function* () {
          yield* records;
        })();

      await decide(q);
      await sut.store.blockNetwork(trapped, H);
      await sut.store.learnOutbound([pair], D);
      await sut.store.putEntries([listed]);
      const older = await mine(sut.store);
      assert.deepEqual(
        older.map((r) => r.type),
        ["block", "entry", "outbound", "triplet"],
      );
      sut.advance(301 * S);
      await decide(q); // passes: seen later, and the network gets a client record
      await sut.store.blockNetwork(trapped, 2 * H);
      await sut.store.learnOutbound([pair], 2 * D);
      await sut.store.putEntries([{ ...listed, comment: "newer", createdAtMs: listed.createdAtMs + 1 }]);
      const newer = await mine(sut.store);
      assert.equal(newer.length, 5);

      assert.deepEqual(await sut.store.importRecords(replay(older)), { imported: 0, expired: 0, kept: 4 });
      assert.deepEqual(summary(await mine(sut.store)), summary(newer), "the newer state stays");
      assert.equal((await decide(q)).kind, "known_triplet");

      const target = await openEmpty();
      try {
        assert.deepEqual(await target.importRecords(replay(older)), { imported: 4, expired: 0, kept: 0 });
        assert.deepEqual(summary(await mine(target)), summary(older));
        assert.deepEqual(await target.importRecords(replay(newer)), { imported: 5, expired: 0, kept: 0 });
        assert.deepEqual(summary(await mine(target)), summary(newer), "the older state is replaced");
        assert.deepEqual(await target.importRecords(replay(newer)), { imported: 0, expired: 0, kept: 5 });
      } finally {
        await target.close();
      }
    });

    it("after an import that failed, the entries before the failure are stored, with a new lists version (so in force)", async () => {
      const before = await sut.store.listsVersion();
      async function* cutOff(): AsyncIterable<StateRecord> {
        yield { type: "entry", entry: entry("sender_whitelist", "partial@example.org") };
        throw new Error("the dump was cut off");
      }
      await assert.rejects(sut.store.importRecords(cutOff()), /cut off/);
      assert.ok((await sut.store.listEntries()).some((e) => e.value === "partial@example.org"));
      assert.notEqual(await sut.store.listsVersion(), before);
    });

    it("counts the state", async () => {
      const stats = await sut.store.stats(5);
      assert.ok(stats.pendingTriplets > 0 && stats.passedTriplets > 0, JSON.stringify(stats));
      assert.ok(stats.greytrappedNetworks >= 1 && stats.outboundPairs >= 1, JSON.stringify(stats));
    });

    it("closes", async () => {
      await close();
    });
  });
}
