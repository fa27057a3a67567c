/**
 * End to end: a real private Postfix asks `greyfleet policy`, which asks `greyfleet serve` on a
 * real redis-server; real swaks sends the mail, with XCLIENT to present other client addresses.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { freePort } from "../support/ports";
import { PostfixInstance } from "../support/postfix";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { startAll } from "../support/start-all";
import { swaks } from "../support/swaks";

const DELAY_SECONDS = 1;

describe("Postfix with the greyfleet policy shim", () => {
  let redis: RedisServer;
  let service: GreyfleetProcess;
  let policy: GreyfleetProcess;
  let tempfail: GreyfleetProcess;
  let postfix: PostfixInstance;
  let postfixTempfail: PostfixInstance;
  let servicePort: number;

  const shim = (...extra: string[]) =>
    GreyfleetProcess.start([
      "policy",
      "--decision",
      `127.0.0.1:${servicePort}`,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
      ...extra,
    ]);

  before(async () => {
    redis = await RedisServer.start();
    servicePort = await freePort();
    service = await GreyfleetProcess.start([
      "serve",
      "--store",
      redis.url,
      "--redis-key-prefix",
      uniquePrefix(),
      "--delay",
      `${DELAY_SECONDS}s`,
      "--listen",
      `127.0.0.1:${servicePort}`,
      "--metrics-listen",
      "",
    ]);
    [policy, tempfail] = await startAll([shim(), shim("--failure-mode", "tempfail")]);
    const address = (proc: GreyfleetProcess) => `inet:${proc.logged(/policy server listening/, "policy")}`;
    [postfix, postfixTempfail] = await startAll([
      PostfixInstance.start({ policyService: address(policy), policyAtData: true }),
      PostfixInstance.start({ policyService: address(tempfail), policyAtData: true }),
    ]);
  });

  after(async () => {
    await postfix?.stop();
    await postfixTempfail?.stop();
    for (const proc of [policy, tempfail, service]) await proc?.stop();
    await redis?.stop();
  });

  it("defers the first attempt, accepts the retry with an X-Greylist header, then the client's /24", async () => {
    const mail = { port: postfix.smtpPort, from: "news@example.org", to: "bob@example.com" };
    const first = await swaks({ ...mail, xclientAddr: "192.0.2.1" });
    assert.equal(first.rcpt[0]?.reply.code, 450, first.transcript);
    assert.match(first.rcpt[0]?.reply.text ?? "", /4\.7\.1 <bob@example\.com>: Recipient address rejected: Greylisted/);
    assert.equal(first.accepted, false);

    // The delay is measured by the store's clock: this is the one real wait of the file.
    await delay(DELAY_SECONDS * 1000 + 100);
    const retry = await swaks({ ...mail, xclientAddr: "192.0.2.1" });
    assert.equal(retry.accepted, true, retry.transcript);
    const headers = await postfix.deliveredHeaders(retry.queueId as string);
    const greylist = headers.filter((h) => h.startsWith("X-Greylist:"));
    assert.equal(greylist.length, 1, headers.join("\n"));
    assert.match(greylist[0] ?? "", /^X-Greylist: delayed 1 seconds by greyfleet-[\d.]+ at \S+; /);

    const neighbour = await swaks({ ...mail, xclientAddr: "192.0.2.77" });
    assert.equal(neighbour.accepted, true, neighbour.transcript);
    const neighbourHeaders = await postfix.deliveredHeaders(neighbour.queueId as string);
    assert.ok(!neighbourHeaders.some((h) => h.startsWith("X-Greylist:")), "a known triplet is not marked as delayed");
  });

  it("never delays an authenticated submission", async () => {
    const sent = await swaks({
      port: postfix.smtpPort,
      from: "alice@example.com",
      to: "someone@example.com",
      xclientAddr: "198.51.100.20",
      xclientLogin: "alice",
    });
    assert.equal(sent.accepted, true, sent.transcript);
  });

  it("greylists a bounce at DATA, after RCPT, so sender-verification callouts pass", async () => {
    const bounce = await swaks({
      port: postfix.smtpPort,
      from: "<>",
      to: "bob@example.com",
      xclientAddr: "203.0.113.9",
    });
    assert.equal(bounce.rcpt[0]?.reply.code, 250, bounce.transcript);
    assert.equal(bounce.data?.code, 450, bounce.transcript);
    const callout = await swaks({
      port: postfix.smtpPort,
      from: "<>",
      to: "bob@example.com",
      xclientAddr: "203.0.113.10",
      quitAfter: "RCPT",
    });
    assert.equal(callout.rcpt[0]?.reply.code, 250, callout.transcript);
  });

  it("accepts mail (failure mode open) or defers it (tempfail) well within Postfix's timeout when the service is down", async () => {
    await service.stop("SIGKILL");
    const started = Date.now();
    const open = await swaks({ port: postfix.smtpPort, to: "down@example.com", xclientAddr: "192.0.2.200" });
    assert.equal(open.accepted, true, open.transcript);
    const closed = await swaks({ port: postfixTempfail.smtpPort, to: "down@example.com", xclientAddr: "192.0.2.201" });
    assert.equal(closed.rcpt[0]?.reply.code, 450, closed.transcript);
    assert.match(closed.rcpt[0]?.reply.text ?? "", /Greylisting service temporarily unavailable/);
    assert.ok(Date.now() - started < 8_000, `took ${Date.now() - started} ms`);
  });
});
