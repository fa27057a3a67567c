/**
 * The shims' idle timeout, on in-process shims with a short one: a quiet connection is closed, a
 * busy one is not, and a milter connection is never cut while the MTA's client uploads a message
 * (between DATA and its end the MTA sends the milter nothing). The waits are the socket timers
 * under test: real time, a few hundred ms.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { assertContinue, ipv4, smtpSession } from "../support/milter-client";
import { PolicyClient } from "../support/policy-client";
import { type ShimUnderTest, startShimUnderTest } from "../support/shim-under-test";
import { startAll } from "../support/start-all";
import { waitFor } from "../support/wait";

const IDLE_MS = 200;

describe("shim idle timeout", () => {
  let policy: ShimUnderTest;
  let milter: ShimUnderTest;
  before(async () => {
    [policy, milter] = await startAll([startShimUnderTest("policy", IDLE_MS), startShimUnderTest("milter", IDLE_MS)]);
  });
  after(async () => {
    await policy?.stop();
    await milter?.stop();
  });

  it("closes a quiet policy connection, and not one that keeps asking", async () => {
    const busy = await PolicyClient.open(policy.address);
    const quiet = await PolicyClient.open(policy.address);
    let closedAt = 0;
    const opened = Date.now();
    void quiet.closed.then(() => {
      closedAt = Date.now();
    });
    for (let i = 0; i < 4; i++) {
      assert.match(await busy.ask({ recipient: `busy${i}@example.com` }), /^action=/);
      await delay(IDLE_MS / 2);
    }
    await waitFor("the quiet connection to be closed", () => closedAt > 0, 2_000);
    assert.ok(closedAt - opened >= IDLE_MS, `closed after ${closedAt - opened} ms`);
    assert.match(await busy.ask({ recipient: "still-open@example.com" }), /^action=/);
    busy.close();
  });

  it("closes a quiet milter connection, but not between DATA and the end of the message", async () => {
    const quiet = await smtpSession(milter.address, ipv4("192.0.2.40"));
    const uploading = await smtpSession(milter.address, ipv4("192.0.2.41"));
    assertContinue(await uploading.mail("alice@example.org", { authUser: "alice" }));
    assertContinue(await uploading.rcpt("bob@example.com"));
    assertContinue(await uploading.data());
    await quiet.closed; // the idle timeout, while the other connection is in its message
    await delay(IDLE_MS * 2); // the upload goes on: nothing reaches the milter
    const packets = await uploading.endOfMessage();
    assert.equal(packets.length, 1);
    assertContinue(packets[0]);
    await uploading.quit();
  });
});
