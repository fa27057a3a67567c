import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Action, ProtocolState, Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { MemoryStore } from "../../services/decision/store/memory";
import type { GreylistStore } from "../../services/decision/store/store";
import { GreyfleetError } from "../../services/shared/errors";
import { metricValue, rcpt, TestClock, testEngine } from "../support/engine";

describe("Engine", () => {
  it("defers a new triplet with 451 4.7.1 and says when to retry", async () => {
    const clock = new TestClock();
    const { engine } = testEngine(new MemoryStore(clock.now));
    const response = await engine.check(rcpt());
    assert.equal(response.action, Action.ACTION_DEFER);
    assert.equal(response.reason, Reason.REASON_NEW_TRIPLET);
    assert.equal(response.smtpCode, 451);
    assert.equal(response.enhancedStatusCode, "4.7.1");
    assert.equal(response.smtpText, "Greylisted, please try again later");
    assert.equal(response.retryAfterSeconds, 300);
    assert.equal(response.xGreylistHeader, "");
  });

  it("passes a retry after the delay with an X-Greylist header, then knows the triplet", async () => {
    const clock = new TestClock(Date.UTC(2026, 10, 27, 12, 0, 0));
    const { engine } = testEngine(new MemoryStore(clock.now));
    await engine.check(rcpt());
    clock.advance(120_000);
    const early = await engine.check(rcpt());
    assert.equal(early.reason, Reason.REASON_TOO_EARLY);
    assert.equal(early.retryAfterSeconds, 180);
    clock.advance(192_000);
    const passed = await engine.check(rcpt());
    assert.equal(passed.action, Action.ACTION_ACCEPT);
    assert.equal(passed.reason, Reason.REASON_PASSED_AFTER_RETRY);
    assert.equal(passed.delayedSeconds, 312);
    assert.equal(
      passed.xGreylistHeader,
      "delayed 312 seconds by greyfleet-test at mx.test; Fri, 27 Nov 2026 12:05:12 +0000",
    );
    assert.equal(passed.smtpCode, 0);
    const known = await engine.check(rcpt());
    assert.equal(known.reason, Reason.REASON_KNOWN_TRIPLET);
    assert.equal(known.xGreylistHeader, "");
  });

  it("groups the client's /24 and normalises the sender into one triplet", async () => {
    const clock = new TestClock();
    const { engine } = testEngine(new MemoryStore(clock.now));
    await engine.check(rcpt({ clientAddress: "198.51.100.1", sender: "prvs=1234abcdef=News+a@Example.org" }));
    clock.advance(301_000);
    const neighbour = await engine.check(
      rcpt({
        clientAddress: "198.51.100.200",
        sender: "prvs=9999ffffff=news+b@example.org",
        recipient: "BOB@example.com",
      }),
    );
    assert.equal(neighbour.reason, Reason.REASON_PASSED_AFTER_RETRY);
    const otherNet = await engine.check(rcpt({ clientAddress: "198.51.101.1", sender: "news@example.org" }));
    assert.equal(otherNet.reason, Reason.REASON_NEW_TRIPLET);
  });

  it("never greylists authenticated clients, and decides the null sender at DATA only", async () => {
    const clock = new TestClock();
    const { engine } = testEngine(new MemoryStore(clock.now));
    const outbound = await engine.check(rcpt({ saslUsername: "alice" }));
    assert.deepEqual([outbound.action, outbound.reason], [Action.ACTION_ACCEPT, Reason.REASON_AUTHENTICATED_CLIENT]);
    const bounceAtRcpt = await engine.check(rcpt({ sender: "" }));
    assert.deepEqual(
      [bounceAtRcpt.action, bounceAtRcpt.reason],
      [Action.ACTION_ACCEPT, Reason.REASON_NULL_SENDER_DEFERRED_TO_DATA],
    );
    const data = ProtocolState.PROTOCOL_STATE_DATA;
    const bounceAtData = await engine.check(rcpt({ sender: "<>", protocolState: data }));
    assert.equal(bounceAtData.reason, Reason.REASON_NEW_TRIPLET);
    const normalAtData = await engine.check(rcpt({ protocolState: data }));
    assert.equal(normalAtData.reason, Reason.REASON_NOT_GREYLISTED_AT_STAGE);
    clock.advance(300_000);
    assert.equal(
      (await engine.check(rcpt({ sender: "", protocolState: data }))).reason,
      Reason.REASON_PASSED_AFTER_RETRY,
    );
    // The pass was single use: the next bounce is greylisted again.
    assert.equal((await engine.check(rcpt({ sender: "", protocolState: data }))).reason, Reason.REASON_NEW_TRIPLET);
  });

  it("refuses invalid input with invalid_argument and counts it by field", async () => {
    const { engine, registry } = testEngine(new MemoryStore());
    await assert.rejects(engine.check(rcpt({ clientAddress: "not-an-ip" })), (error: unknown) => {
      assert.ok(error instanceof GreyfleetError);
      assert.equal(error.code, "invalid_argument");
      assert.match(error.message, /client_address "not-an-ip" is not an IPv4 or IPv6 address/);
      return true;
    });
    assert.equal(await metricValue(registry, "greyfleet_invalid_requests_total", { field: "client_address" }), 1);
  });

  it("counts decisions by action and reason and observes latency", async () => {
    const { engine, registry } = testEngine(new MemoryStore());
    await engine.check(rcpt());
    await engine.check(rcpt());
    assert.equal(
      await metricValue(registry, "greyfleet_decisions_total", { action: "defer", reason: "new_triplet" }),
      1,
    );
    assert.equal(await metricValue(registry, "greyfleet_decisions_total", { action: "defer", reason: "too_early" }), 1);
    const text = await registry.metrics();
    assert.match(text, /greyfleet_decision_duration_seconds_bucket\{le="0\.0001"\} \d+/);
    assert.match(text, /greyfleet_decision_duration_seconds_count 2/);
  });
});

/** A store that fails the way a dead backend does: the fault cannot be caused for real in a unit test. */
function failingStore(mode: "reject" | "hang"): GreylistStore {
  const fail = () =>
    mode === "reject" ? Promise.reject(new Error("connection refused")) : new Promise<never>(() => {});
  return {
    kind: "redis",
    decide: fail,
    blockNetwork: fail,
    learnOutbound: fail,
    listsVersion: fail,
    listEntries: fail,
    putEntries: fail,
    removeEntries: fail,
    sampleStats: fail,
    waitUntilReady: () => Promise.reject(new Error("down")),
    ping: () => Promise.reject(new Error("down")),
    close: () => Promise.resolve(),
  };
}

describe("Engine failure mode", () => {
  it("open: accepts with reason store unavailable, counted, logged once per interval", async () => {
    const clock = new TestClock();
    const { engine, registry, lines } = testEngine(failingStore("reject"), { now: clock.now });
    for (let i = 0; i < 3; i++) {
      const response = await engine.check(rcpt());
      assert.deepEqual([response.action, response.reason], [Action.ACTION_ACCEPT, Reason.REASON_STORE_UNAVAILABLE]);
    }
    assert.equal(await metricValue(registry, "greyfleet_failure_mode_activations_total", { mode: "open" }), 3);
    assert.equal(await metricValue(registry, "greyfleet_store_errors_total", { kind: "error" }), 3);
    assert.equal(lines.filter((line) => line.includes("failure mode decides")).length, 1);
    clock.advance(60_000);
    await engine.check(rcpt());
    const warnings = lines.filter((line) => line.includes("failure mode decides"));
    assert.equal(warnings.length, 2);
    assert.match(warnings[1] ?? "", /suppressed_since_last=2/);
  });

  it("tempfail: defers with 451 4.3.0 when the store hangs past its timeout", async () => {
    const { engine, registry } = testEngine(failingStore("hang"), { failureMode: "tempfail", storeTimeoutMs: 20 });
    const response = await engine.check(rcpt());
    assert.equal(response.action, Action.ACTION_DEFER);
    assert.equal(response.reason, Reason.REASON_STORE_UNAVAILABLE);
    assert.equal(response.smtpCode, 451);
    assert.equal(response.enhancedStatusCode, "4.3.0");
    assert.equal(await metricValue(registry, "greyfleet_store_errors_total", { kind: "timeout" }), 1);
  });

  it("answers by the failure mode at once when the caller's deadline has passed", { timeout: 2_000 }, async () => {
    // A store that would hang for the whole store timeout if it were asked.
    let asked = 0;
    const store: GreylistStore = {
      ...failingStore("hang"),
      decide: () => {
        asked++;
        return new Promise<never>(() => {});
      },
    };
    const clock = new TestClock();
    const { engine, registry } = testEngine(store, { storeTimeoutMs: 60_000, now: clock.now });
    const started = performance.now();
    const response = await engine.check(rcpt(), { deadlineMs: clock.now() - 1 });
    assert.ok(performance.now() - started < 1_000, "the answer waited for the store");
    assert.deepEqual([response.action, response.reason], [Action.ACTION_ACCEPT, Reason.REASON_STORE_UNAVAILABLE]);
    assert.equal(asked, 0);
    assert.equal(await metricValue(registry, "greyfleet_store_errors_total", { kind: "timeout" }), 1);
  });

  it("does not touch the store for a caller whose deadline has passed", async () => {
    const clock = new TestClock();
    const { engine } = testEngine(new MemoryStore(clock.now), { now: clock.now });
    const late = await engine.check(rcpt(), { deadlineMs: clock.now() - 1 });
    assert.equal(late.reason, Reason.REASON_STORE_UNAVAILABLE);
    // Nothing was recorded: the triplet is still new.
    assert.equal((await engine.check(rcpt())).reason, Reason.REASON_NEW_TRIPLET);
  });
});
