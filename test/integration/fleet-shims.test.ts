/**
 * A fleet end to end: decision replicas on one real redis-server, a policy shim on "MX A" and a
 * milter shim on "MX B", and a shim that balances over two replicas while one is killed under
 * load. Real waits: the 1 s greylisting delay (Redis TIME decides it, no injected clock reaches
 * it) and a killed replica's return, which is a real reconnect.
 */
import assert from "node:assert/strict";
import { lookup } from "node:dns/promises";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { DECISIONS_TOTAL, SHIM_FAILURE_MODE_ACTIVATIONS_TOTAL } from "../../services/shared/metric-names";
import { GreyfleetProcess, scrapedMetric } from "../support/greyfleet-process";
import { assertContinue, assertReplyCode, ipv4, smtpSession } from "../support/milter-client";
import { PolicyClient } from "../support/policy-client";
import { freePort } from "../support/ports";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { waitFor } from "../support/wait";

const DEFER = "action=DEFER_IF_PERMIT Greylisted, please try again later";
const LOCAL: readonly string[] = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];

describe("a fleet: MX shims on decision replicas sharing one Redis", () => {
  let redis: RedisServer;
  const prefix = uniquePrefix();
  const processes: GreyfleetProcess[] = [];
  const replica = async (listen = "127.0.0.1:0") => {
    const args = ["serve", "--store", redis.url, "--redis-key-prefix", prefix, "--delay", "1s"];
    const proc = await GreyfleetProcess.start([...args, "--listen", listen, "--metrics-listen", "127.0.0.1:0"]);
    processes.push(proc);
    return proc;
  };
  const shim = async (kind: "policy" | "milter", decision: string, mtaId: string) => {
    const proc = await GreyfleetProcess.start([kind, "--decision", decision, ...LOCAL, "--mta-id", mtaId]);
    processes.push(proc);
    return proc;
  };
  const decisions = (proc: GreyfleetProcess) => scrapedMetric(proc.metricsAddress, DECISIONS_TOTAL);

  before(async () => {
    redis = await RedisServer.start();
  });

  after(async () => {
    for (const proc of processes.reverse()) await proc.stop("SIGKILL");
    await redis?.stop();
  });

  it("accepts through MX B's milter shim on replica 2 the retry of mail deferred through MX A's policy shim on replica 1", async () => {
    const [one, two] = await Promise.all([replica(), replica()]);
    const [mxA, mxB] = await Promise.all([
      shim("policy", one.grpcAddress, "mx-a"),
      shim("milter", two.grpcAddress, "mx-b"),
    ]);
    const policy = await PolicyClient.open(mxA.logged(/policy server listening/, "policy"));
    const triplet = { client_address: "198.51.100.10", sender: "news@example.org", recipient: "bob@example.com" };
    assert.equal(await policy.ask(triplet), DEFER);
    policy.close();
    assert.deepEqual([await decisions(one), await decisions(two)], [1, 0]);

    const early = await smtpSession(mxB.logged(/milter server listening/, "milter"), ipv4("198.51.100.20"));
    assertContinue(await early.mail("news@example.org"));
    assertReplyCode(await early.rcpt("bob@example.com"), "451 4.7.1 Greylisted, please try again later");
    await early.quit();

    await delay(1_050); // the one greylisting delay: replica 2 sees it over through Redis TIME
    const retry = await smtpSession(mxB.logged(/milter server listening/, "milter"), ipv4("198.51.100.20"));
    assertContinue(await retry.mail("news@example.org"));
    assertContinue(await retry.rcpt("bob@example.com"));
    await retry.quit();
    assert.deepEqual([await decisions(one), await decisions(two)], [1, 2]);
  });

  it("a shim given two replicas spreads its checks, and carries on when one is killed under load", async () => {
    const port = await freePort();
    const [steady, doomed] = await Promise.all([replica(), replica(`127.0.0.1:${port}`)]);
    const mx = await shim("policy", `${steady.grpcAddress},127.0.0.1:${port}`, "mx-c");
    const address = mx.logged(/policy server listening/, "policy");
    const steadyBefore = await decisions(steady);

    // 8 connections, 150 new triplets each, one request at a time as Postfix asks; the doomed
    // replica is killed once 300 have been answered.
    const answers: string[] = [];
    let killed: Promise<number | null> | undefined;
    let answeredBeforeKill = 0;
    await Promise.all(
      Array.from({ length: 8 }, async (_, connection) => {
        const client = await PolicyClient.open(address);
        for (let i = 0; i < 150; i++) {
          answers.push(
            await client.ask({ client_address: `192.0.2.${connection}`, recipient: `load-${i}@example.com` }),
          );
          if (answers.length === 300 && !killed) {
            answeredBeforeKill = answers.length;
            killed = doomed.stop("SIGKILL");
          }
        }
        client.close();
      }),
    );
    await killed;

    const deferred = answers.filter((answer) => answer === DEFER).length;
    const failedOpen = answers.filter((answer) => answer === "action=DUNNO").length;
    assert.equal(answers.length, 1200, "every request was answered");
    assert.equal(deferred + failedOpen, 1200, `only greylisting or failure-mode answers: ${new Set(answers)}`);
    // A dead replica costs only the checks in flight on it (one per connection at most): when its
    // ejection ends its channel is down, and the checks go to the steady replica.
    assert.ok(failedOpen <= 8, `${failedOpen} checks failed open`);
    assert.equal(await scrapedMetric(mx.metricsAddress, SHIM_FAILURE_MODE_ACTIVATIONS_TOTAL), failedOpen);
    const steadyTook = (await decisions(steady)) - steadyBefore;
    assert.ok(steadyTook < deferred, "the doomed replica answered some checks before it died");
    assert.ok(
      steadyTook >= deferred - answeredBeforeKill,
      `after the kill the steady replica answered the rest: ${steadyTook} of ${deferred}`,
    );

    // Still down past its first two ejections (1 s, then 2 s): when an ejection ends the replica's
    // channel is not connected, so the checks go on to the steady replica and none fails open.
    const whileDown: string[] = [];
    const asker = await PolicyClient.open(address);
    for (const until = Date.now() + 3_500; Date.now() < until; await delay(10)) {
      whileDown.push(await asker.ask({ client_address: "192.0.2.98", recipient: `down-${Date.now()}@example.com` }));
    }
    asker.close();
    assert.ok(
      whileDown.every((answer) => answer === DEFER),
      `${whileDown.filter((answer) => answer !== DEFER).length} of ${whileDown.length} checks were not greylisted`,
    );

    // The replica comes back on its address; the shim finds it again after its ejection ends.
    const back = await replica(`127.0.0.1:${port}`);
    // Every answer meanwhile is the greylisting one: until its channel has reconnected the
    // replica gets no checks, so none fails on it.
    const client = await PolicyClient.open(address);
    const returned: string[] = [];
    await waitFor(
      "the shim to send checks to the replica that came back",
      async () => {
        returned.push(await client.ask({ client_address: "192.0.2.99", recipient: `back-${Date.now()}@example.com` }));
        return (await decisions(back)) > 0;
      },
      35_000,
      100,
    );
    client.close();
    assert.ok(
      returned.every((answer) => answer === DEFER),
      `every check was greylisted while the replica came back: ${returned.join("; ")}`,
    );
  });

  it("dns:NAME:PORT balances over every address the name resolves to", async () => {
    const port = await freePort();
    const proc = await replica(`127.0.0.1:${port}`);
    const mx = await shim("policy", `dns:localhost:${port}`, "mx-d");
    const expected = (await lookup("localhost", { all: true }))
      .map((found) => (found.family === 6 ? `[${found.address}]:${port}` : `${found.address}:${port}`))
      .join(",");
    assert.equal(mx.logged(/decision replicas/, "replicas"), expected);
    const client = await PolicyClient.open(mx.logged(/policy server listening/, "policy"));
    // ::1, if localhost resolves to it here, has no replica: its failures eject it and fail open.
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await client.ask({ recipient: `dns-${i}@example.com` }));
    client.close();
    assert.ok(answers.filter((answer) => answer === DEFER).length >= 3, answers.join("; "));
    assert.ok((await decisions(proc)) >= 3);
  });
});
