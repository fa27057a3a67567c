/**
 * End to end: a real private Postfix with `greyfleet milter` in smtpd_milters, asking
 * `greyfleet serve` on a real redis-server; real swaks (with XCLIENT) and a plain SMTP session
 * for two messages on one connection.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { PostfixInstance } from "../support/postfix";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { SmtpSession } from "../support/smtp-session";
import { swaks } from "../support/swaks";

const DELAY_SECONDS = 1;

describe("Postfix with the greyfleet milter", () => {
  let redis: RedisServer;
  let service: GreyfleetProcess;
  let milter: GreyfleetProcess;
  let postfix: PostfixInstance;

  before(async () => {
    redis = await RedisServer.start();
    service = await GreyfleetProcess.start([
      "serve",
      "--store",
      redis.url,
      "--redis-key-prefix",
      uniquePrefix(),
      "--delay",
      `${DELAY_SECONDS}s`,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
    ]);
    milter = await GreyfleetProcess.start([
      "milter",
      "--decision",
      service.grpcAddress,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
    ]);
    postfix = await PostfixInstance.start({
      milter: `inet:${milter.logged(/milter server listening/, "milter")}`,
      ipv6: true,
    });
  });

  after(async () => {
    // Everything is stopped before any exit code is checked: one failure must not leave the rest running.
    let postfixError: unknown;
    await postfix?.stop().catch((error: unknown) => {
      postfixError = error;
    });
    const exits = [
      ["milter", await milter?.stop()],
      ["serve", await service?.stop()],
    ] as const;
    await redis?.stop();
    if (postfixError !== undefined) throw postfixError;
    for (const [name, code] of exits) if (code !== undefined) assert.equal(code, 0, `greyfleet ${name} exit code`);
  });

  it("defers only the new recipient of a message, queues it for the other, and passes the retry with X-Greylist", async () => {
    const from = "news@example.org";
    // Make "known@" a passed triplet first: first attempt, the delay, the retry.
    await swaks({ port: postfix.smtpPort, from, to: "known@example.com", xclientAddr: "192.0.2.1" });
    // The delay is measured by the store's clock: this file's real waits are the delay itself.
    await delay(DELAY_SECONDS * 1000 + 100);
    const passed = await swaks({ port: postfix.smtpPort, from, to: "known@example.com", xclientAddr: "192.0.2.1" });
    assert.equal(passed.accepted, true, passed.transcript);
    const passedHeaders = await postfix.deliveredHeaders(passed.queueId as string);
    assert.equal(passedHeaders.filter((h) => /^X-Greylist: delayed 1 seconds by greyfleet-/.test(h)).length, 1);

    const both = await swaks({
      port: postfix.smtpPort,
      from,
      to: ["new@example.com", "known@example.com"],
      xclientAddr: "192.0.2.2",
    });
    assert.equal(both.rcpt[0]?.reply.code, 451, both.transcript);
    assert.match(both.rcpt[0]?.reply.text ?? "", /^4\.7\.1 Greylisted, please try again later/);
    assert.equal(both.rcpt[1]?.reply.code, 250, both.transcript);
    assert.equal(both.accepted, true, "queued for the recipient that passed");
    assert.deepEqual(await postfix.deliveredRecipients(both.queueId as string), ["known@example.com"]);
    const bothHeaders = await postfix.deliveredHeaders(both.queueId as string);
    assert.ok(!bothHeaders.some((h) => h.startsWith("X-Greylist:")), "known triplets are not marked as delayed");

    await delay(DELAY_SECONDS * 1000 + 100);
    const retry = await swaks({ port: postfix.smtpPort, from, to: "new@example.com", xclientAddr: "192.0.2.3" });
    assert.equal(retry.accepted, true, retry.transcript);
    const headers = await postfix.deliveredHeaders(retry.queueId as string);
    assert.equal(headers.filter((h) => h.startsWith("X-Greylist: delayed ")).length, 1, headers.join("\n"));
  });

  it("greylists an IPv6 client by its /64", async () => {
    const from = "v6-sender@example.org";
    const to = "v6@example.com";
    const first = await swaks({ port: postfix.smtpPort, ipv6: true, from, to, xclientAddr: "2001:db8:1:2::10" });
    assert.equal(first.rcpt[0]?.reply.code, 451, first.transcript);
    assert.match(first.rcpt[0]?.reply.text ?? "", /Greylisted/);

    await delay(DELAY_SECONDS * 1000 + 100);
    // Seen for the first time now, after the delay: it passes only as the retry of ::10's triplet.
    const sibling = await swaks({ port: postfix.smtpPort, ipv6: true, from, to, xclientAddr: "2001:db8:1:2::99" });
    assert.equal(sibling.rcpt[0]?.reply.code, 250, sibling.transcript);
    assert.equal(sibling.accepted, true, sibling.transcript);
    // Another /64 of the same /48 is a new triplet: were it grouped with ::10 it would pass now.
    const neighbour = await swaks({ port: postfix.smtpPort, ipv6: true, from, to, xclientAddr: "2001:db8:1:3::1" });
    assert.equal(neighbour.rcpt[0]?.reply.code, 451, neighbour.transcript);
    assert.match(neighbour.rcpt[0]?.reply.text ?? "", /Greylisted/);
  });

  it("decides two messages on one SMTP connection independently", async () => {
    const { session, greeting } = await SmtpSession.open(postfix.smtpPort);
    assert.match(greeting, /^220 /);
    assert.match(await session.command("EHLO client.example.net"), /^250 /);
    assert.match(await session.command("XCLIENT ADDR=198.51.100.5 NAME=[UNAVAILABLE]"), /^220 /);
    assert.match(await session.command("EHLO client.example.net"), /^250 /);
    assert.match(await session.command("MAIL FROM:<a@example.org>"), /^250 /);
    assert.match(await session.command("RCPT TO:<first@example.com>"), /^451 4\.7\.1 Greylisted/);
    assert.match(await session.command("RSET"), /^250 /);
    assert.match(await session.command("MAIL FROM:<b@example.org> SIZE=100"), /^250 /);
    assert.match(await session.command("RCPT TO:<second@example.com>"), /^451 4\.7\.1 Greylisted/);
    assert.match(await session.command("RCPT TO:<postmaster@example.com>"), /^451 /);
    assert.match(await session.command("QUIT"), /^221 /);
    session.close();
  });

  it("never delays an authenticated submission", async () => {
    const sent = await swaks({
      port: postfix.smtpPort,
      from: "alice@example.com",
      to: "anyone@example.com",
      xclientAddr: "203.0.113.50",
      xclientLogin: "alice",
    });
    assert.equal(sent.accepted, true, sent.transcript);
  });
});
