import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import Database from "better-sqlite3";
import { MemoryStore } from "../../services/decision/store/memory";
import { SqliteStore } from "../../services/decision/store/sqlite";
import { DEFAULT_POLICY, TestClock } from "../support/engine";
import { storeConformance } from "./suite";

const dir = mkdtempSync(join(tmpdir(), "greyfleet-conformance-"));
after(() => rmSync(dir, { recursive: true, force: true }));

{
  const clock = new TestClock();
  const store = new MemoryStore(clock.now);
  storeConformance(
    "memory",
    async () => ({ store, advance: (ms) => clock.advance(ms), slackMs: 0 }),
    () => store.close(),
    async () => new MemoryStore(clock.now),
  );
}

{
  const clock = new TestClock();
  let store: SqliteStore;
  let twin: SqliteStore;
  storeConformance(
    "sqlite",
    async () => {
      store = new SqliteStore(join(dir, "conformance.sqlite"), clock.now);
      twin = new SqliteStore(join(dir, "conformance.sqlite"), clock.now);
      return { store, twin, advance: (ms) => clock.advance(ms), slackMs: 0 };
    },
    async () => {
      await store.close();
      await twin.close();
    },
    async () => new SqliteStore(join(dir, `fresh-${Date.now()}.sqlite`), clock.now),
  );
}

describe("sqlite store specifics", () => {
  const query = {
    network: "192.0.2.0/24",
    sender: "a@example.org",
    recipient: "b@example.com",
    singleUse: false,
    outbound: false,
  };

  it("keeps state across close and reopen", async () => {
    const clock = new TestClock();
    const path = join(dir, "reopen.sqlite");
    const first = new SqliteStore(path, clock.now);
    assert.equal((await first.decide(query, DEFAULT_POLICY)).outcome.kind, "new_triplet");
    await first.close();
    const second = new SqliteStore(path, clock.now);
    clock.advance(10_000);
    assert.equal((await second.decide(query, DEFAULT_POLICY)).outcome.kind, "too_early");
    await second.close();
  });

  it("stores no raw address, only hashes", async () => {
    const path = join(dir, "hashes.sqlite");
    const store = new SqliteStore(path, Date.now);
    await store.decide(query, DEFAULT_POLICY);
    await store.close();
    const db = new Database(path, { readonly: true });
    const rows = db.prepare("SELECT * FROM triplets").all() as Record<string, unknown>[];
    db.close();
    assert.equal(rows.length, 1);
    const text = JSON.stringify(rows);
    for (const raw of ["192.0.2", "a@example.org", "b@example.com", "example"]) assert.ok(!text.includes(raw), raw);
  });

  it("prunes expired rows and nothing else", async () => {
    const clock = new TestClock();
    const store = new SqliteStore(join(dir, "prune.sqlite"), clock.now);
    await store.decide(query, DEFAULT_POLICY);
    await store.decide({ ...query, recipient: "c@example.com" }, DEFAULT_POLICY);
    assert.equal(store.prune(), 0);
    clock.advance(DEFAULT_POLICY.retryWindowMs + 1);
    assert.equal(store.prune(), 2);
    await store.close();
  });

  it("exports every live row exactly once across many pages, and skips expired ones", async () => {
    const clock = new TestClock();
    const store = new SqliteStore(join(dir, "pages.sqlite"), clock.now);
    try {
      // 2,345 triplets span three export pages; 5 more expire before the export.
      for (let i = 0; i < 5; i++) await store.decide({ ...query, recipient: `old${i}@example.com` }, DEFAULT_POLICY);
      clock.advance(DEFAULT_POLICY.retryWindowMs - 1);
      for (let i = 0; i < 2_345; i++) await store.decide({ ...query, recipient: `r${i}@example.com` }, DEFAULT_POLICY);
      // Greytrap blocks and outbound pairs are paged the same way: two pages of each.
      for (let i = 0; i < 1_100; i++) await store.blockNetwork(`10.${i >> 8}.${i & 255}.0/24`, DEFAULT_POLICY.maxAgeMs);
      const pairs = Array.from({ length: 1_234 }, (_, i) => ({
        local: "me@example.net",
        external: `p${i}@example.org`,
      }));
      await store.learnOutbound(pairs, DEFAULT_POLICY.maxAgeMs);
      clock.advance(1);
      const ids = { triplet: [] as string[], block: [] as string[], outbound: [] as string[] };
      for await (const record of store.exportRecords()) {
        if (record.type === "triplet" || record.type === "outbound") ids[record.type].push(record.id);
        if (record.type === "block") ids.block.push(record.networkId);
      }
      for (const [type, count] of [
        ["triplet", 2_345],
        ["block", 1_100],
        ["outbound", 1_234],
      ] as const) {
        assert.equal(ids[type].length, count, type);
        assert.equal(new Set(ids[type]).size, count, `no ${type} exported twice`);
      }
    } finally {
      await store.close();
    }
  });

  it("waits for another process's write lock no longer than its busy timeout, and decides once it is free", async () => {
    const path = join(dir, "locked.sqlite");
    const store = new SqliteStore(path, Date.now, undefined, 100);
    const other = new Database(path);
    try {
      other.prepare("BEGIN IMMEDIATE").run();
      const started = performance.now();
      await assert.rejects(async () => store.decide(query, DEFAULT_POLICY), /database is locked/);
      const waited = performance.now() - started;
      assert.ok(waited >= 90 && waited < 1_000, `waited ${Math.round(waited)} ms for the lock`);
      other.prepare("COMMIT").run();
      assert.equal((await store.decide(query, DEFAULT_POLICY)).outcome.kind, "new_triplet");
    } finally {
      other.close();
      await store.close();
    }
  });

  it("refuses a file of another schema version with a clear message", async () => {
    const path = join(dir, "future.sqlite");
    const db = new Database(path);
    db.pragma("user_version = 99");
    db.close();
    assert.throws(() => new SqliteStore(path), /has schema version 99; this greyfleet reads up to version 2/);
  });
});

describe("exact bounds: the local stores expire a record when verdict() does, to the millisecond", () => {
  const q = {
    network: "198.51.100.0/24",
    sender: "a@example.org",
    recipient: "b@example.com",
    singleUse: false,
    outbound: false,
  };
  const kinds: [
    name: string,
    open: (now: () => number) => { decide: MemoryStore["decide"]; close(): Promise<void> },
  ][] = [
    ["memory", (now) => new MemoryStore(now)],
    ["sqlite", (now) => new SqliteStore(join(dir, `bounds-${Date.now()}-${Math.random()}.sqlite`), now)],
  ];
  for (const [name, open] of kinds) {
    it(`${name}: the retry window and max-age end exactly at their length`, async () => {
      const kind = async (store: { decide: MemoryStore["decide"] }, recipient = q.recipient) =>
        (await store.decide({ ...q, recipient }, DEFAULT_POLICY)).outcome.kind;
      const clock = new TestClock();
      const store = open(clock.now);
      try {
        await kind(store, "window-end@example.com");
        await kind(store, "window-last@example.com");
        clock.advance(DEFAULT_POLICY.retryWindowMs - 1);
        assert.equal(await kind(store, "window-last@example.com"), "passed_after_retry");
        clock.advance(1);
        assert.equal(await kind(store, "window-end@example.com"), "new_triplet");
        // window-last passed at T+window-1; unused for exactly max-age it is forgotten.
        clock.advance(DEFAULT_POLICY.maxAgeMs - 2);
        assert.equal(await kind(store, "window-last@example.com"), "known_triplet");
        clock.advance(DEFAULT_POLICY.maxAgeMs);
        assert.equal(await kind(store, "window-last@example.com"), "new_triplet");
      } finally {
        await store.close();
      }
    });
  }
});
