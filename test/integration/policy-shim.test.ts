/** `greyfleet policy` against a real decision service on Redis, over real TCP and gRPC. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { PolicyClient, policyRequest } from "../support/policy-client";
import { freePort } from "../support/ports";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { startAll } from "../support/start-all";
import { waitFor } from "../support/wait";

const DEFER = "action=DEFER_IF_PERMIT Greylisted, please try again later";

describe("policy shim", () => {
  let redis: RedisServer;
  let servicePort: number;
  let service: GreyfleetProcess;
  let policy: GreyfleetProcess;
  let smtpReplies: GreyfleetProcess;
  let tempfail: GreyfleetProcess;
  const prefix = uniquePrefix();
  const startService = () =>
    GreyfleetProcess.start([
      "serve",
      "--store",
      redis.url,
      "--redis-key-prefix",
      prefix,
      "--delay",
      "1s",
      "--listen",
      `127.0.0.1:${servicePort}`,
      "--metrics-listen",
      "",
    ]);
  const startPolicy = (...extra: string[]) =>
    GreyfleetProcess.start([
      "policy",
      "--decision",
      `127.0.0.1:${servicePort}`,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
      "--decision-timeout",
      "300ms",
      ...extra,
    ]);
  const address = (proc: GreyfleetProcess) => proc.logged(/policy server listening/, "policy");

  before(async () => {
    redis = await RedisServer.start();
    servicePort = await freePort();
    service = await startService();
    [policy, smtpReplies, tempfail] = await startAll([
      startPolicy(),
      startPolicy("--policy-defer-reply", "smtp"),
      startPolicy("--failure-mode", "tempfail"),
    ]);
  });

  after(async () => {
    for (const proc of [policy, smtpReplies, tempfail, service]) await proc?.stop();
    await redis?.stop();
  });

  it("defers a new triplet, then passes a retry after the delay with one X-Greylist PREPEND per message", async () => {
    const client = await PolicyClient.open(address(policy));
    const request = { client_address: "198.51.100.7", recipient: "prepend@example.com" };
    const second = { ...request, recipient: "prepend-too@example.com" };
    assert.equal(await client.ask(request), DEFER);
    assert.equal(await client.ask(second), DEFER);
    // The one real wait of this file: the store's clock decides when the delay is over.
    await delay(1_050);
    assert.match(
      await client.ask(request),
      /^action=PREPEND X-Greylist: delayed 1 seconds by greyfleet-[\d.]+ at \S+; \w{3}, /,
    );
    // The other recipient of the same message (same instance) passed too: no second header.
    assert.equal(await client.ask(second), "action=DUNNO");
    assert.equal(await client.ask({ ...request, client_address: "198.51.100.99" }), "action=DUNNO");
    client.close();
  });

  it("answers requests split at every byte and several in one packet, in order", async () => {
    const client = await PolicyClient.open(address(policy));
    const bytes = Buffer.from(policyRequest({ recipient: "split@example.com" }));
    const reply = client.next();
    for (const byte of bytes) client.write(Buffer.from([byte]));
    assert.equal(await reply, DEFER);
    const replies = [client.next(), client.next(), client.next()];
    client.write(
      policyRequest({ recipient: "one@example.com" }) +
        policyRequest({ protocol_state: "MAIL", recipient: "" }) +
        policyRequest({ recipient: "two@example.com", sasl_username: "alice" }),
    );
    assert.deepEqual(await Promise.all(replies), [DEFER, "action=DUNNO", "action=DUNNO"]);
    client.close();
  });

  it("answers a client that shuts down its side after its requests (Exim's readsocket), then closes", async () => {
    const client = await PolicyClient.open(address(policy));
    const replies = [client.next(), client.next()];
    client.write(policyRequest({ recipient: "half1@example.com" }) + policyRequest({ recipient: "half2@example.com" }));
    client.close(); // FIN right after the requests, before any answer
    assert.deepEqual(await Promise.all(replies), [DEFER, DEFER]);
    await client.closed;
  });

  it("greylists the null sender at DATA, not at RCPT", async () => {
    const client = await PolicyClient.open(address(policy));
    const bounce = { sender: "", recipient: "bounce@example.com" };
    assert.equal(await client.ask(bounce), "action=DUNNO");
    assert.equal(await client.ask({ ...bounce, protocol_state: "DATA", recipient_count: "1" }), DEFER);
    assert.equal(await client.ask({ protocol_state: "DATA", recipient_count: "1" }), "action=DUNNO");
    client.close();
  });

  it("greylists what Postfix accepted but the contract bounds: a long HELO, control and 8-bit bytes", async () => {
    const client = await PolicyClient.open(address(policy));
    const odd: Record<string, string>[] = [
      { helo_name: "h".repeat(300), recipient: "long-helo@example.com" },
      { sender: "a\u0001b@example.org", recipient: "control@example.com" },
      { sender: `${"s".repeat(330)}@example.org`, recipient: "long-sender@example.com" },
    ];
    for (const request of odd) {
      assert.equal(await client.ask(request), DEFER, JSON.stringify(request).slice(0, 60));
      assert.equal(await client.ask(request), DEFER, "its retry is the same triplet, too early");
    }
    // Latin-1 from a client Postfix let send 8-bit text: read as Latin-1, greylisted.
    const latin1 = Buffer.from(
      policyRequest({ sender: "j\u00f6rg@example.org", recipient: "latin1@example.com" }),
      "latin1",
    );
    const reply = client.next();
    client.write(latin1);
    assert.equal(await reply, DEFER);
    client.close();
  });

  it("answers with the explicit SMTP code when asked to", async () => {
    const client = await PolicyClient.open(address(smtpReplies));
    assert.equal(
      await client.ask({ recipient: "smtp-form@example.com" }),
      "action=451 4.7.1 Greylisted, please try again later",
    );
    client.close();
  });

  it("closes a connection that breaks the protocol, and only that one", async () => {
    const good = await PolicyClient.open(address(policy));
    const cases = [
      "request=smtpd_access_policy\nthis line has no equals sign\n\n",
      `request=smtpd_access_policy\nhelo_name=${"h".repeat(5_000)}\n\n`,
      Buffer.from([0x00, 0xff, 0xfe, 0x0a, 0x0a]),
      "request=something_else\n\n",
    ];
    for (const bytes of cases) {
      const bad = await PolicyClient.open(address(policy));
      const reply = bad.next();
      bad.write(bytes);
      assert.equal(await reply, "(closed)");
    }
    assert.equal(await good.ask({ recipient: "still-fine@example.com" }), DEFER);
    good.close();
    const metrics = await (await fetch(`http://${policy.metricsAddress}/metrics`)).text();
    assert.match(metrics, /greyfleet_shim_protocol_errors_total\{shim="policy",code="malformed_line"\} 1/);
    assert.match(metrics, /greyfleet_shim_protocol_errors_total\{shim="policy",code="line_too_long"\} 1/);
    assert.match(metrics, /greyfleet_shim_requests_total\{shim="policy",stage="rcpt",action="defer"\} \d+/);
  });

  it("applies its failure mode within the decision timeout while the service is down, and recovers", async () => {
    const open = await PolicyClient.open(address(policy));
    const closed = await PolicyClient.open(address(tempfail));
    assert.equal(await open.ask({ recipient: "before@example.com" }), DEFER);
    assert.equal(await service.stop("SIGKILL"), null);
    const started = Date.now();
    assert.equal(await open.ask({ recipient: "down@example.com" }), "action=DUNNO");
    assert.equal(
      await closed.ask({ recipient: "down@example.com" }),
      "action=DEFER_IF_PERMIT Greylisting service temporarily unavailable, please try again later",
    );
    assert.equal(await closed.ask({ recipient: "down@example.com", sasl_username: "alice" }), "action=DUNNO");
    assert.equal(await closed.ask({ recipient: "callout@example.com", sender: "" }), "action=DUNNO", "callouts pass");
    assert.ok(Date.now() - started < 2_000, "answered within the decision timeout, not Postfix's");
    const metrics = await (await fetch(`http://${tempfail.metricsAddress}/metrics`)).text();
    assert.match(
      metrics,
      /greyfleet_shim_failure_mode_activations_total\{shim="policy",mode="tempfail",cause="\w+"\} [1-9]/,
    );

    service = await startService();
    await waitFor("the shim to reach the restarted service", async () => {
      const reply = await open.ask({ recipient: "after@example.com" });
      return reply === DEFER;
    });
    open.close();
    closed.close();
  });
});
