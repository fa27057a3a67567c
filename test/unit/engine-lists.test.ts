import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Action, ProtocolState, Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { Admin } from "../../services/decision/admin";
import { type ListEntryValue, Lists } from "../../services/decision/domain/lists";
import { ListsCache } from "../../services/decision/lists-cache";
import { MemoryStore } from "../../services/decision/store/memory";
import { DEFAULT_POLICY, metricValue, rcpt, TestClock, testEngine } from "../support/engine";

const H = 3_600_000;

function entry(kind: ListEntryValue["kind"], value: string, expiresAtMs = 0): ListEntryValue {
  return { kind, value, expiresAtMs, comment: "", createdAtMs: 0, source: "admin" };
}

/** An engine over a memory store whose lists hold `entries`. */
async function setup(entries: ListEntryValue[], overrides: Parameters<typeof testEngine>[1] = {}) {
  const clock = new TestClock();
  const store = new MemoryStore(clock.now);
  await store.putEntries(entries);
  const lists = new ListsCache(store, [], (error) => {
    throw error;
  });
  await lists.refresh();
  const { engine, registry } = testEngine(store, { lists, now: clock.now, ...overrides });
  const admin = new Admin({
    engine,
    store,
    lists,
    policy: DEFAULT_POLICY,
    grouping: { ipv4PrefixLength: 24, ipv6PrefixLength: 64 },
  });
  return { clock, store, lists, engine, registry, admin };
}

describe("Engine with lists", () => {
  const cases: [name: string, entries: ListEntryValue[], request: Parameters<typeof rcpt>[0], reason: Reason][] = [
    [
      "client address",
      [entry("client_whitelist", "198.51.100.0/24")],
      { clientAddress: "198.51.100.9" },
      Reason.REASON_CLIENT_WHITELISTED,
    ],
    [
      "partial IPv4 prefix",
      [entry("client_whitelist", "129.74")],
      { clientAddress: "129.74.200.1" },
      Reason.REASON_CLIENT_WHITELISTED,
    ],
    [
      "client name",
      [entry("client_name_whitelist", ".pool.example.net")],
      { clientName: "mx7.pool.example.net" },
      Reason.REASON_CLIENT_NAME_WHITELISTED,
    ],
    [
      "sender domain",
      [entry("sender_whitelist", "example.org")],
      { sender: "News+x@Example.org" },
      Reason.REASON_SENDER_WHITELISTED,
    ],
    [
      "recipient local part",
      [entry("recipient_opt_out", "postmaster@")],
      { recipient: "postmaster@example.com" },
      Reason.REASON_RECIPIENT_OPTED_OUT,
    ],
    [
      "recipient domain",
      [entry("recipient_opt_out", "example.com")],
      { recipient: "bob@example.com" },
      Reason.REASON_RECIPIENT_OPTED_OUT,
    ],
  ];
  for (const [name, entries, request, reason] of cases) {
    it(`accepts by the ${name} whitelist at once`, async () => {
      const { engine, registry } = await setup(entries);
      const response = await engine.check(rcpt(request));
      assert.deepEqual([response.action, response.reason], [Action.ACTION_ACCEPT, reason]);
      assert.equal(await metricValue(registry, "greyfleet_list_hits_total"), 1);
    });
  }

  it("greylists as usual when no entry matches, and ignores expired entries", async () => {
    const { engine, clock } = await setup([entry("client_whitelist", "192.0.2.0/24", Date.UTC(2026, 10, 27, 13))]);
    assert.equal((await engine.check(rcpt({ clientAddress: "203.0.113.1" }))).reason, Reason.REASON_NEW_TRIPLET);
    assert.equal((await engine.check(rcpt())).reason, Reason.REASON_CLIENT_WHITELISTED);
    clock.advance(2 * H);
    assert.equal((await engine.check(rcpt())).reason, Reason.REASON_NEW_TRIPLET, "the entry expired");
  });

  it("greylists only opted-in recipients in opt-in mode", async () => {
    const { engine } = await setup([entry("recipient_opt_in", "greylisted@example.com")], {
      rules: {
        internalNetworks: new Lists([]),
        recipientOptIn: true,
        blacklistAction: "reject",
        greytrapAction: "tempfail",
      },
    });
    assert.equal((await engine.check(rcpt({ recipient: "greylisted@example.com" }))).reason, Reason.REASON_NEW_TRIPLET);
    assert.equal(
      (await engine.check(rcpt({ recipient: "other@example.com" }))).reason,
      Reason.REASON_RECIPIENT_NOT_OPTED_IN,
    );
  });

  it("rejects a blacklisted client, or tempfails it by option, even if whitelisted", async () => {
    const entries = [entry("client_blacklist", "203.0.113.0/24"), entry("client_whitelist", "203.0.113.5")];
    const reject = await (await setup(entries)).engine.check(rcpt({ clientAddress: "203.0.113.5" }));
    assert.deepEqual(
      [reject.action, reject.reason, reject.smtpCode, reject.enhancedStatusCode],
      [Action.ACTION_REJECT, Reason.REASON_CLIENT_BLACKLISTED, 550, "5.7.1"],
    );
    const { engine } = await setup(entries, {
      rules: {
        internalNetworks: new Lists([]),
        recipientOptIn: false,
        blacklistAction: "tempfail",
        greytrapAction: "tempfail",
      },
    });
    const tempfail = await engine.check(rcpt({ clientAddress: "203.0.113.5" }));
    assert.deepEqual([tempfail.action, tempfail.smtpCode], [Action.ACTION_DEFER, 451]);
  });

  it("blocks a network that writes to a greytrap, for every recipient, until the block ends", async () => {
    const { engine, clock } = await setup([entry("greytrap", "trap@example.com")]);
    const hit = await engine.check(rcpt({ clientAddress: "192.0.2.9", recipient: "trap@example.com" }));
    assert.deepEqual([hit.action, hit.reason], [Action.ACTION_DEFER, Reason.REASON_GREYTRAP_HIT]);
    const neighbour = await engine.check(rcpt({ clientAddress: "192.0.2.200", recipient: "bob@example.com" }));
    assert.deepEqual([neighbour.action, neighbour.reason], [Action.ACTION_DEFER, Reason.REASON_NETWORK_GREYTRAPPED]);
    assert.equal((await engine.check(rcpt({ clientAddress: "192.0.3.1" }))).reason, Reason.REASON_NEW_TRIPLET);
    clock.advance(24 * H + 1);
    assert.equal((await engine.check(rcpt({ clientAddress: "192.0.2.200" }))).reason, Reason.REASON_NEW_TRIPLET);
  });

  it("does not spring a greytrap on a bounce (backscatter)", async () => {
    const { engine } = await setup([entry("greytrap", "trap@example.com")]);
    const bounce = await engine.check(rcpt({ sender: "", recipient: "trap@example.com" }));
    assert.equal(bounce.reason, Reason.REASON_NULL_SENDER_DEFERRED_TO_DATA);
    assert.equal((await engine.check(rcpt({ recipient: "bob@example.com" }))).reason, Reason.REASON_NEW_TRIPLET);
  });

  it("learns a local user's outgoing mail and accepts the reply at once", async () => {
    const { engine } = await setup([]);
    const out = await engine.check(
      rcpt({
        clientAddress: "10.0.0.5",
        sender: "Alice@Local.example",
        recipient: "partner@remote.example",
        saslUsername: "alice",
      }),
    );
    assert.equal(out.reason, Reason.REASON_AUTHENTICATED_CLIENT);
    const reply = await engine.check(
      rcpt({
        clientAddress: "198.51.100.20",
        sender: "partner+bounces@remote.example",
        recipient: "alice@local.example",
      }),
    );
    assert.deepEqual([reply.action, reply.reason], [Action.ACTION_ACCEPT, Reason.REASON_OUTBOUND_REPLY]);
    const stranger = await engine.check(rcpt({ sender: "stranger@remote.example", recipient: "alice@local.example" }));
    assert.equal(stranger.reason, Reason.REASON_NEW_TRIPLET);
  });

  it("keeps numeric mailboxes apart: a reply is accepted only from the one written to", async () => {
    const { engine } = await setup([]);
    await engine.check(
      rcpt({
        clientAddress: "10.0.0.5",
        sender: "alice@local.example",
        recipient: "10001@qq.com",
        saslUsername: "alice",
      }),
    );
    const reply = await engine.check(
      rcpt({ clientAddress: "198.51.100.20", sender: "10001@qq.com", recipient: "alice@local.example" }),
    );
    assert.equal(reply.reason, Reason.REASON_OUTBOUND_REPLY);
    const other = await engine.check(
      rcpt({ clientAddress: "192.0.2.66", sender: "88888888@qq.com", recipient: "alice@local.example" }),
    );
    assert.deepEqual([other.action, other.reason], [Action.ACTION_DEFER, Reason.REASON_NEW_TRIPLET]);
  });

  it("treats clients in internal networks as outgoing mail, and learns from reported mail", async () => {
    const internal = new Lists([entry("client_whitelist", "10.0.0.0/8")]);
    const { engine } = await setup([], {
      rules: {
        internalNetworks: internal,
        recipientOptIn: false,
        blacklistAction: "reject",
        greytrapAction: "tempfail",
      },
    });
    const out = await engine.check(
      rcpt({ clientAddress: "10.1.2.3", sender: "bob@local.example", recipient: "x@remote.example" }),
    );
    assert.equal(out.reason, Reason.REASON_INTERNAL_CLIENT);
    assert.equal(
      (await engine.check(rcpt({ sender: "x@remote.example", recipient: "bob@local.example" }))).reason,
      Reason.REASON_OUTBOUND_REPLY,
    );
    assert.equal(await engine.reportOutgoing("carol@local.example", ["y@remote.example", ""]), 1);
    assert.equal(
      (await engine.check(rcpt({ sender: "y@remote.example", recipient: "carol@local.example" }))).reason,
      Reason.REASON_OUTBOUND_REPLY,
    );
  });

  it("in shadow mode accepts everything, saying what enforcement would do, and counts that", async () => {
    const { engine, registry } = await setup([entry("client_blacklist", "203.0.113.0/24")], { mode: "shadow" });
    const greylisted = await engine.check(rcpt());
    assert.deepEqual(
      [greylisted.action, greylisted.shadowAction, greylisted.reason, greylisted.smtpCode],
      [Action.ACTION_ACCEPT, Action.ACTION_DEFER, Reason.REASON_NEW_TRIPLET, 451],
    );
    const blacklisted = await engine.check(rcpt({ clientAddress: "203.0.113.1" }));
    assert.deepEqual([blacklisted.action, blacklisted.shadowAction], [Action.ACTION_ACCEPT, Action.ACTION_REJECT]);
    assert.equal(
      await metricValue(registry, "greyfleet_decisions_total", { action: "defer", reason: "new_triplet" }),
      1,
    );
    assert.equal((await engine.check(rcpt())).reason, Reason.REASON_TOO_EARLY, "the decision was recorded");
  });
});

describe("Admin explain", () => {
  it("says what Check then answers, for every state of a triplet, changing nothing", async () => {
    const { engine, admin, clock } = await setup([entry("greytrap", "trap@example.com")]);
    const request = rcpt();
    const steps: (() => Promise<unknown>)[] = [
      async () => undefined,
      async () => clock.advance(60_000),
      async () => clock.advance(300_000),
      async () => clock.advance(H),
    ];
    for (const step of steps) {
      await step();
      const explained = await admin.explain(request);
      const again = await admin.explain(request);
      assert.deepEqual(again.response, explained.response, "explain changed nothing");
      const checked = await engine.check(request);
      assert.deepEqual(checked, explained.response, explained.explanation);
    }
    const trap = rcpt({ clientAddress: "198.51.100.1", recipient: "trap@example.com" });
    assert.match((await admin.explain(trap)).explanation, /greytrap/);
    assert.equal(
      (await admin.explain({ ...trap, recipient: "bob@example.com" })).response.reason,
      Reason.REASON_NEW_TRIPLET,
    );
    await engine.check(trap);
    const blocked = await admin.explain({ ...trap, recipient: "bob@example.com" });
    assert.equal(blocked.response.reason, Reason.REASON_NETWORK_GREYTRAPPED);
    assert.match(blocked.explanation, /blocked until/);
    assert.equal(
      (await admin.explain({ ...request, protocolState: ProtocolState.PROTOCOL_STATE_DATA })).response.reason,
      Reason.REASON_NOT_GREYLISTED_AT_STAGE,
    );
  });

  it("adds entries it checks and normalises, and reports the ones it refuses", async () => {
    const { admin, engine } = await setup([]);
    const result = await admin.addEntries([
      entry("client_whitelist", "192.0.2.77/24"),
      entry("greytrap", "example.com"),
      entry("sender_whitelist", "bad value"),
    ]);
    assert.equal(result.added, 1);
    assert.deepEqual(
      result.problems.map((p) => p.index),
      [1, 2],
    );
    assert.equal((await admin.listEntries("client_whitelist"))[0]?.value, "192.0.2.0/24");
    assert.equal((await engine.check(rcpt({ clientAddress: "192.0.2.1" }))).reason, Reason.REASON_CLIENT_WHITELISTED);
    const removed = await admin.removeEntries([
      { kind: "client_whitelist", value: "192.0.2.0/24" },
      { kind: "client_whitelist", value: "10.0.0.0/8" },
    ]);
    assert.equal(removed.removed, 1);
    assert.equal(removed.problems.length, 1);
    assert.equal((await engine.check(rcpt({ clientAddress: "192.0.2.1" }))).reason, Reason.REASON_NEW_TRIPLET);
  });

  it("refuses what a restore of its export would refuse, and what `admin list` could not print safely", async () => {
    const { admin } = await setup([]);
    const result = await admin.addEntries([
      entry("client_whitelist", "192.0.2.1", Date.UTC(2199, 11, 31)),
      entry("client_whitelist", "192.0.2.2", Date.UTC(9999, 11, 31)),
      entry("client_whitelist", "192.0.2.3", 8.64e15 + 1),
      { ...entry("client_whitelist", "192.0.2.4"), source: "x\u001b[2J" },
      { ...entry("client_whitelist", "192.0.2.5"), source: "y".repeat(201) },
    ]);
    assert.equal(result.added, 1);
    assert.deepEqual(
      result.problems.map((p) => [p.index, p.problem]),
      [
        [1, "expires later than the year 2200 (or is not a time)"],
        [2, "expires later than the year 2200 (or is not a time)"],
        [3, "source has a control character"],
        [4, "source is longer than 200 bytes"],
      ],
    );
  });
});

describe("ListsCache", () => {
  it("tells every refresh, not only a new version, so a count of entries in force follows expiry", async () => {
    const clock = new TestClock();
    const store = new MemoryStore(clock.now);
    await store.putEntries([
      entry("sender_whitelist", "a@example.org"),
      entry("sender_whitelist", "b@example.org", clock.now() + H),
    ]);
    const changes: number[] = [];
    const inForce: number[] = [];
    const lists = new ListsCache(
      store,
      [],
      (error) => {
        throw error;
      },
      (current) => changes.push(current.sizes(clock.now()).sender_whitelist),
      (current) => inForce.push(current.sizes(clock.now()).sender_whitelist),
    );
    await lists.refresh();
    clock.advance(H);
    await lists.refresh(); // same version: b expired meanwhile
    assert.deepEqual(changes, [2]);
    assert.deepEqual(inForce, [2, 1]);
  });
});
