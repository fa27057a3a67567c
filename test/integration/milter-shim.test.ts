/**
 * The milter shim against a real milter client that speaks like Postfix (test/support/milter-client):
 * `greyfleet milter` in front of `greyfleet serve` over real gRPC, `greyfleet all` on a unix socket,
 * and shims whose decision service is down or hung. The only real wait in this file is the
 * greylisting delay before a retry passes: with --store memory: the delay is measured by the
 * service's own clock, which no test reaches, so --delay is 1 s and the test waits exactly the
 * retry_after the service logged.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import * as C from "../../services/milter/constants";
import { GreyfleetProcess, scrapedMetric as metric } from "../support/greyfleet-process";
import {
  assertContinue,
  assertReplyCode,
  assertXGreylistThenContinue,
  GREYLISTED,
  ipv4,
  MilterClient,
  replyCode,
  formatReply as show,
  smtpSession,
} from "../support/milter-client";
import { freePort } from "../support/ports";
import { waitFor } from "../support/wait";

const UNAVAILABLE = "451 4.3.0 Greylisting service temporarily unavailable, please try again later";
const LOCAL: readonly string[] = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];

/** The greylisting profile the shim asks of a Postfix-like offer. */
const GREYLIST_STEPS =
  C.SMFIP_NOHDRS | C.SMFIP_NOBODY | C.SMFIP_NOEOH | C.SMFIP_NOUNKNOWN | C.SMFIP_NR_CONN | C.SMFIP_NR_HELO;

/** `key` of the decision service's log line about `recipient` with `reason`. */
function decisionLogged(proc: GreyfleetProcess, recipient: string, reason: string, key: string): Promise<string> {
  const line = new RegExp(`msg=decision .*reason=${reason} .*recipient=${recipient.replaceAll(".", "\\.")}\\b`);
  return waitFor(`decision ${reason} for ${recipient} logged`, () => proc.logged(line, key));
}

describe("greyfleet milter in front of greyfleet serve", () => {
  let serve: GreyfleetProcess;
  let shim: GreyfleetProcess;
  let milter: string;

  before(async () => {
    serve = await GreyfleetProcess.start(["serve", "--store", "memory:", "--delay", "1s", ...LOCAL]);
    shim = await GreyfleetProcess.start(["milter", "--decision", serve.grpcAddress, ...LOCAL, "--mta-id", "mx1"]);
    milter = shim.logged(/milter server listening/, "milter");
  });

  after(async () => {
    const codes = [await shim?.stop(), await serve?.stop()];
    assert.deepEqual(codes, [0, 0], "both exit cleanly on SIGTERM");
  });

  it("answers a Postfix offer with the greylisting profile, and an older MTA with what it knows", async () => {
    const postfix = await MilterClient.open(milter);
    const reply = await postfix.negotiate();
    assert.deepEqual(
      [reply.version, reply.actions, reply.protocol],
      [6, C.SMFIF_ADDHDRS | C.SMFIF_SETSYMLIST, GREYLIST_STEPS],
    );
    assert.match(reply.macros.get(C.SMFIM_ENVFROM) ?? "", /\{auth_authen\}/);
    assert.match(reply.macros.get(C.SMFIM_ENVRCPT) ?? "", /\{rcpt_addr\}/);
    await postfix.quit();

    const v2 = await MilterClient.open(milter);
    const old = await v2.negotiate({ version: 2, actions: C.SMFI_V2_ACTS, protocol: C.SMFI_V2_PROT });
    assert.deepEqual([old.version, old.actions, old.protocol, old.macros.size], [2, C.SMFIF_ADDHDRS, 0x70, 0]);
    // Without NR_CONN/NR_HELO on offer, CONNECT and HELO are answered.
    assertContinue(await v2.connectEvent(ipv4("192.0.2.1")));
    assertContinue(await v2.helo("client.example.net"));
    // Version 2 has no DATA step: the null sender is decided at end of message.
    assertContinue(await v2.mail(""));
    assertContinue(await v2.rcpt("old-mta@example.com"));
    assert.equal(await v2.data(), undefined);
    assert.deepEqual((await v2.endOfMessage()).map(show), [show(replyCode(GREYLISTED))]);
    await v2.quit();
  });

  it("defers new triplets, then passes their retries with one X-Greylist header in the same write as CONTINUE", async () => {
    const first = await smtpSession(milter, ipv4("198.51.100.10"));
    assertContinue(await first.mail("sender@example.org"));
    assertReplyCode(await first.rcpt("passed@example.com"), GREYLISTED);
    first.abort();
    assertContinue(await first.mail(""));
    assertContinue(await first.rcpt("bounce@example.com"));
    assertReplyCode(await first.data(), GREYLISTED);
    first.abort();
    assertContinue(await first.mail(""));
    assertContinue(await first.rcpt("dsn-a@example.com"));
    assertContinue(await first.rcpt("dsn-b@example.com"));
    assertReplyCode(await first.data(), GREYLISTED);
    await first.quit();

    // The one real wait, until the later of the two triplets may pass by the service's clock.
    const retryAfter = Number(await decisionLogged(serve, "bounce@example.com", "new_triplet", "retry_after_s"));
    assert.equal(retryAfter, 1);
    await delay(retryAfter * 1000);

    const retry = await smtpSession(milter, ipv4("198.51.100.20")); // same /24
    assertContinue(await retry.mail("sender@example.org", { args: ["SIZE=100"] }));
    assertContinue(await retry.rcpt("passed@example.com"));
    assertReplyCode(await retry.rcpt("new@example.com"), GREYLISTED);
    assertContinue(await retry.data());
    assertXGreylistThenContinue(await retry.endOfMessage());
    // The next message on the same connection: the triplet is known now, and no header leaks.
    retry.abort();
    assertContinue(await retry.mail("sender@example.org"));
    assertContinue(await retry.rcpt("passed@example.com"));
    assertContinue(await retry.data());
    assert.deepEqual((await retry.endOfMessage()).map(show), ["c"]);
    // The null sender passes at DATA, gets its header at end of message, and its pass is single-use.
    retry.abort();
    assertContinue(await retry.mail(""));
    assertContinue(await retry.rcpt("bounce@example.com"));
    assertContinue(await retry.data());
    assertXGreylistThenContinue(await retry.endOfMessage());
    retry.abort();
    assertContinue(await retry.mail(""));
    assertContinue(await retry.rcpt("bounce@example.com"));
    assertReplyCode(await retry.data(), GREYLISTED);
    // A bounce to two recipients is decided as one message, so its first retry passes whole.
    retry.abort();
    assertContinue(await retry.mail(""));
    assertContinue(await retry.rcpt("dsn-a@example.com"));
    assertContinue(await retry.rcpt("dsn-b@example.com"));
    assertContinue(await retry.data());
    assertXGreylistThenContinue(await retry.endOfMessage());
    await retry.quit();
  });

  it("never defers an authenticated sender, and forgets the authentication after ABORT", async () => {
    const session = await smtpSession(milter, ipv4("203.0.113.7"));
    assertContinue(await session.mail("alice@example.net", { authUser: "alice" }));
    assertContinue(await session.rcpt("someone@example.com"));
    assertContinue(await session.rcpt("other@example.com"));
    assertContinue(await session.data());
    assert.deepEqual((await session.endOfMessage()).map(show), ["c"]);
    session.abort();
    // Second message in the same connection (RSET between): same triplet, not authenticated.
    assertContinue(await session.mail("alice@example.net"));
    assertReplyCode(await session.rcpt("someone@example.com"), GREYLISTED);
    session.abort(); // RSET
    assertContinue(await session.mail("bob@example.net"));
    assertReplyCode(await session.rcpt("someone@example.com"), GREYLISTED);
    await session.quit();
  });

  it("defers the null sender at DATA, not at RCPT", async () => {
    const session = await smtpSession(milter, ipv4("203.0.113.8"));
    assertContinue(await session.mail(""));
    assertContinue(await session.rcpt("postmaster@example.com"));
    assertContinue(await session.rcpt("abuse@example.com"));
    assertReplyCode(await session.data(), GREYLISTED);
    await session.quit();
    // Two recipients: the message is decided once, as a whole (recipient ""), as Postfix's
    // policy client asks at DATA; neither recipient's triplet is asked at DATA.
    await waitFor("the message's one decision logged", () =>
      serve.logged(/msg=decision .*reason=new_triplet client_address=203\.0\.113\.8 .*sender="" recipient="" /, "mta"),
    );
    assert.ok(!serve.lines.some((line) => /msg=decision .*sender="" recipient=(postmaster|abuse)@/.test(line)));
  });

  it("greylists an IPv6 client from Postfix (::) and sendmail (IPv6:) by its /64", async () => {
    const postfix = await smtpSession(milter, {
      hostname: "[2001:db8::25]",
      family: "6",
      port: 1025,
      address: "2001:db8::25",
    });
    assertContinue(await postfix.mail("v6@example.org"));
    assertReplyCode(await postfix.rcpt("v6@example.com"), GREYLISTED);
    await postfix.quit();
    const sendmail = await smtpSession(milter, {
      hostname: "[IPv6:2001:db8::26]",
      family: "6",
      port: 1025,
      address: "IPv6:2001:db8::26",
    });
    assertContinue(await sendmail.mail("v6@example.org"));
    assertReplyCode(await sendmail.rcpt("v6@example.com"), GREYLISTED);
    await sendmail.quit();
    assert.equal(await decisionLogged(serve, "v6@example.com", "too_early", "client_address"), "2001:db8::26");
  });

  it("never defers a client that came in over a unix socket (family L), without asking the service", async () => {
    const session = await smtpSession(milter, {
      hostname: "localhost",
      family: "L",
      address: "/var/spool/postfix/public/pickup",
    });
    assertContinue(await session.mail("local@example.org"));
    assertContinue(await session.rcpt("local@example.com"));
    assertContinue(await session.data());
    assert.deepEqual((await session.endOfMessage()).map(show), ["c"]);
    await session.quit();
    assert.ok(!serve.lines.some((line) => line.includes("local@example.com")));
    assert.equal(
      await metric(shim.metricsAddress, "greyfleet_shim_requests_total", { shim: "milter", action: "local" }),
      1,
    );
  });

  it("closes only the connection that sent garbage; a concurrent connection keeps working", async () => {
    const garbage: Record<string, Buffer> = {
      zero_length: Buffer.from([0, 0, 0, 0]),
      frame_too_large: Buffer.from([0x80, 0, 0, 0, C.SMFIC_RCPT]), // length 2^31
      unknown_command: Buffer.from([0, 0, 0, 1, 0x5a]), // 'Z'
    };
    const bystander = await smtpSession(milter, ipv4("192.0.2.30"));
    assertContinue(await bystander.mail("bystander@example.org"));
    for (const [code, bytes] of Object.entries(garbage)) {
      const bad = await smtpSession(milter, ipv4("192.0.2.31"));
      assertContinue(await bad.mail("bad@example.org"));
      bad.sendRaw(bytes);
      await bad.closed;
      assert.deepEqual(bad.unread, [], `${code}: nothing sent back`);
      assertReplyCode(await bystander.rcpt(`after-${code}@example.com`), GREYLISTED);
    }
    await bystander.quit();
    for (const code of Object.keys(garbage)) {
      assert.equal(
        await metric(shim.metricsAddress, "greyfleet_shim_protocol_errors_total", { shim: "milter", code }),
        1,
      );
    }
    assert.equal(shim.child.exitCode, null);
  });

  it("answers a recipient the MTA half-closed the connection after, then closes", async () => {
    const session = await smtpSession(milter, ipv4("192.0.2.41"));
    assertContinue(await session.mail("half-close@example.org"));
    const reply = session.rcpt("half-close@example.com");
    session.end(); // EOF right behind RCPT, before its answer
    assertReplyCode(await reply, GREYLISTED);
    await session.closed;
  });

  it("counts a client that disconnects inside a frame, and goes on serving", async () => {
    const cut = await smtpSession(milter, ipv4("192.0.2.40"));
    cut.sendRaw(Buffer.from([0, 0, 0, 0x16, C.SMFIC_MAIL, 0x3c, 0x61])); // 7 of MAIL's 26 bytes
    cut.end();
    await cut.closed;
    await waitFor(
      "the cut-off frame counted",
      async () =>
        (await metric(shim.metricsAddress, "greyfleet_shim_protocol_errors_total", {
          shim: "milter",
          code: "closed",
        })) === 1,
    );
    const next = await smtpSession(milter, ipv4("192.0.2.40"));
    assertContinue(await next.mail("after-cut@example.org"));
    assertReplyCode(await next.rcpt("after-cut@example.com"), GREYLISTED);
    await next.quit();
  });

  it("exports requests by stage and action, sessions and decision calls, and no failure-mode activations", async () => {
    const at = shim.metricsAddress;
    const requests = async (stage: string, action: string) =>
      metric(at, "greyfleet_shim_requests_total", { shim: "milter", stage, action });
    // Totals of the tests above: every recipient answered once, each in its own stage.
    assert.deepEqual(
      [await requests("rcpt", "defer"), await requests("rcpt", "accept"), await requests("rcpt", "local")],
      [11, 14, 1],
    );
    assert.deepEqual([await requests("data", "defer"), await requests("data", "accept")], [5, 2]);
    assert.equal(await metric(at, "greyfleet_shim_decision_call_duration_seconds_count", { shim: "milter" }), 32);
    assert.equal(await metric(at, "greyfleet_shim_failure_mode_activations_total", {}), 0);
    assert.equal(await metric(at, "greyfleet_shim_connections_total", { shim: "milter" }), 16);
    await waitFor("every MTA connection closed", async () => {
      return (await metric(at, "greyfleet_shim_open_connections", { shim: "milter" })) === 0;
    });
  });
});

describe("greyfleet all, milter on a unix socket", () => {
  let all: GreyfleetProcess;
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-milter-"));
  const socket = `unix:${join(dir, "milter.sock")}`;

  before(async () => {
    const args = ["all", "--store", "memory:", ...LOCAL, "--milter-listen", socket, "--policy-listen", ""];
    all = await GreyfleetProcess.start(args);
  });

  after(async () => {
    const code = await all?.stop();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0);
  });

  it("defers new triplets per recipient, passes outgoing mail and defers the null sender at DATA", async () => {
    assert.equal(all.logged(/milter server listening/, "milter"), socket);
    const session = await smtpSession(socket, ipv4("198.51.100.99"));
    assertContinue(await session.mail("alice@example.net", { authUser: "alice" }));
    assertContinue(await session.rcpt("friend@example.com"));
    session.abort();
    assertContinue(await session.mail("stranger@example.org"));
    assertReplyCode(await session.rcpt("friend@example.com"), GREYLISTED);
    assertReplyCode(await session.rcpt("other@example.com"), GREYLISTED);
    session.abort();
    assertContinue(await session.mail(""));
    assertContinue(await session.rcpt("friend@example.com"));
    assertReplyCode(await session.data(), GREYLISTED);
    await session.quit();
    const count = (stage: string, action: string) =>
      metric(all.metricsAddress, "greyfleet_shim_requests_total", { shim: "milter", stage, action });
    assert.deepEqual(
      [await count("rcpt", "accept"), await count("rcpt", "defer"), await count("data", "defer")],
      [2, 2, 1],
    );
  });
});

describe("greyfleet milter with its decision service down", () => {
  const timeoutMs = 300;
  let hung: ReturnType<typeof createServer>;
  const held = new Set<Socket>();
  let open: GreyfleetProcess;
  let tempfail: GreyfleetProcess;

  before(async () => {
    // Accepts TCP and never says a word: every Check runs into the shim's deadline.
    hung = createServer((socket) => held.add(socket.on("error", () => {})));
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    const address = hung.address();
    const hungAt = `127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
    const refusedAt = `127.0.0.1:${await freePort()}`; // nothing listens there
    const args = (decision: string, mode: string) => [
      "milter",
      ...LOCAL,
      "--decision",
      decision,
      "--decision-timeout",
      `${timeoutMs}ms`,
      "--failure-mode",
      mode,
    ];
    // Settled, not Promise.all: a process that did start must be known to after() even if the other failed.
    const started = await Promise.allSettled([
      GreyfleetProcess.start(args(hungAt, "open")).then((proc) => (open = proc)),
      GreyfleetProcess.start(args(refusedAt, "tempfail")).then((proc) => (tempfail = proc)),
    ]);
    for (const result of started) if (result.status === "rejected") throw result.reason;
  });

  after(async () => {
    const codes = [await open?.stop(), await tempfail?.stop()];
    for (const socket of held) socket.destroy();
    await new Promise((resolve) => hung?.close(resolve));
    assert.deepEqual(codes, [0, 0]);
  });

  it("fails open within --decision-timeout when the service does not answer", async () => {
    const session = await smtpSession(open.logged(/milter server listening/, "milter"), ipv4("192.0.2.50"));
    assertContinue(await session.mail("sender@example.org"));
    const started = performance.now();
    assertContinue(await session.rcpt("rcpt@example.com"));
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= timeoutMs - 20 && elapsed < timeoutMs + 500, `answered after ${elapsed} ms`);
    await session.quit();
    const labels = { shim: "milter", mode: "open", cause: "deadline_exceeded" };
    assert.equal(await metric(open.metricsAddress, "greyfleet_shim_failure_mode_activations_total", labels), 1);
    assert.ok(open.lines.some((line) => /no decision: failure mode decides/.test(line)));
  });

  it("tempfails with 451 4.3.0 when the service is down, but never an authenticated sender", async () => {
    const session = await smtpSession(tempfail.logged(/milter server listening/, "milter"), ipv4("192.0.2.51"));
    assertContinue(await session.mail("sender@example.org"));
    const started = performance.now();
    assertReplyCode(await session.rcpt("rcpt@example.com"), UNAVAILABLE);
    assert.ok(performance.now() - started < timeoutMs + 500);
    session.abort();
    assertContinue(await session.mail("alice@example.net", { authUser: "alice" }));
    assertContinue(await session.rcpt("rcpt@example.com"));
    assertContinue(await session.data());
    assert.deepEqual((await session.endOfMessage()).map(show), ["c"]);
    session.abort();
    // The failure mode, too, defers the null sender at DATA only: sender-verification callouts work.
    assertContinue(await session.mail(""));
    assertContinue(await session.rcpt("postmaster@example.com"));
    assertReplyCode(await session.data(), UNAVAILABLE);
    await session.quit();
    const at = tempfail.metricsAddress;
    const activations = await metric(at, "greyfleet_shim_failure_mode_activations_total", {
      shim: "milter",
      mode: "tempfail",
      cause: "unavailable",
    });
    assert.equal(activations, 4, "every recipient was decided by the failure mode");
    const requests = async (stage: string, action: string) =>
      metric(at, "greyfleet_shim_requests_total", { shim: "milter", stage, action });
    assert.deepEqual(
      [await requests("rcpt", "defer"), await requests("rcpt", "accept"), await requests("data", "defer")],
      [1, 2, 1],
      "counted as answered",
    );
  });
});
