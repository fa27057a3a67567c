/**
 * Two `greyfleet serve` processes on one real redis-server: the fleet shares one greylist.
 * This is the one test that waits real time: the delay is measured by Redis TIME inside two
 * separate processes, which no injected clock reaches, so it uses --delay 2s and waits exactly
 * the retry_after_seconds the service answered.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import { Action, Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { rcpt } from "../support/engine";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { grpcError, healthStatus, reflectedServices, TestClient } from "../support/grpc-clients";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { startAll } from "../support/start-all";

describe("two decision services on one Redis", () => {
  let redis: RedisServer;
  let a: GreyfleetProcess;
  let b: GreyfleetProcess;
  let clientA: TestClient;
  let clientB: TestClient;
  const prefix = uniquePrefix();

  before(async () => {
    redis = await RedisServer.start();
    const args = [
      "serve",
      "--store",
      redis.url,
      "--redis-key-prefix",
      prefix,
      "--delay",
      "2s",
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
    ];
    [a, b] = await startAll([GreyfleetProcess.start(args), GreyfleetProcess.start(args)]);
    clientA = new TestClient(a.grpcAddress);
    clientB = new TestClient(b.grpcAddress);
  });

  after(async () => {
    clientA?.close();
    clientB?.close();
    const codes = [await a?.stop(), await b?.stop()];
    await redis?.stop();
    assert.deepEqual(codes, [0, 0], "both replicas exit 0 on SIGTERM");
  });

  it("reports SERVING and lists GreylistService through reflection", async () => {
    assert.equal(await healthStatus(a.grpcAddress), "SERVING");
    assert.equal(await healthStatus(b.grpcAddress, "greyfleet.v1.GreylistService"), "SERVING");
    assert.ok((await reflectedServices(a.grpcAddress)).includes("greyfleet.v1.GreylistService"));
  });

  it("defers through A, defers an early retry through B, accepts a retry after the delay through B", async () => {
    const request = rcpt({ clientAddress: "203.0.113.5", sender: "news@example.org", recipient: "bob@example.com" });
    const first = await clientA.check(request);
    assert.deepEqual([first.action, first.reason], [Action.ACTION_DEFER, Reason.REASON_NEW_TRIPLET]);
    assert.equal(first.retryAfterSeconds, 2);
    assert.equal(`${first.smtpCode} ${first.enhancedStatusCode}`, "451 4.7.1");

    const early = await clientB.check(request);
    assert.deepEqual([early.action, early.reason], [Action.ACTION_DEFER, Reason.REASON_TOO_EARLY]);
    assert.ok(early.retryAfterSeconds >= 1 && early.retryAfterSeconds <= 2);

    await delay(early.retryAfterSeconds * 1000 + 50);
    const retry = await clientB.check(request);
    assert.deepEqual([retry.action, retry.reason], [Action.ACTION_ACCEPT, Reason.REASON_PASSED_AFTER_RETRY]);
    assert.match(retry.xGreylistHeader, /^delayed 2 seconds by greyfleet-\d+\.\d+\.\d+ at \S+; \w{3}, \d+ \w{3} \d{4}/);

    const neighbour = await clientA.check({ ...request, clientAddress: "203.0.113.77" });
    assert.deepEqual([neighbour.action, neighbour.reason], [Action.ACTION_ACCEPT, Reason.REASON_KNOWN_TRIPLET]);
  });

  it("keeps the state in one key per triplet, with no address in any key", async () => {
    const client = redis.client();
    const keys = await client.keys(`${prefix}*`);
    client.disconnect();
    const triplets = keys.filter((key) => key.includes(":t:"));
    assert.equal(triplets.length, 1, keys.join(", "));
    assert.equal(keys.length, 2, "the triplet and its client network's auto-whitelist record");
    for (const key of keys) {
      for (const raw of ["203.0.113", "news", "bob", "example"])
        assert.ok(!key.includes(raw), `${key} contains ${raw}`);
    }
  });

  it("refuses malformed input with INVALID_ARGUMENT naming the field", async () => {
    await assert.rejects(clientA.check(rcpt({ clientAddress: "999.1.1.1" })), (error) => {
      assert.deepEqual(grpcError(error), {
        code: status.INVALID_ARGUMENT,
        details: 'client_address "999.1.1.1" is not an IPv4 or IPv6 address',
      });
      return true;
    });
    await assert.rejects(clientA.check(rcpt({ recipient: `${"x".repeat(400)}@example.com` })), (error) => {
      assert.deepEqual(grpcError(error), {
        code: status.INVALID_ARGUMENT,
        details: "recipient is longer than 320 bytes",
      });
      return true;
    });
    await assert.rejects(clientA.check(rcpt({ heloName: "h".repeat(2_000_000) })), (error) => {
      assert.equal(grpcError(error).code, status.RESOURCE_EXHAUSTED, "an oversized message is refused before decoding");
      return true;
    });
    assert.equal((await clientA.check(rcpt({ clientAddress: "2001:db8::1" }))).action, Action.ACTION_DEFER);
  });

  it("exports decisions by action and reason and a sub-millisecond latency histogram", async () => {
    const text = await (await fetch(`http://${a.metricsAddress}/metrics`)).text();
    assert.match(text, /greyfleet_decisions_total\{action="defer",reason="new_triplet"\} [1-9]/);
    assert.match(text, /greyfleet_decisions_total\{action="accept",reason="known_triplet"\} 1/);
    assert.match(text, /greyfleet_decision_duration_seconds_bucket\{le="0\.0005"\} \d+/);
    assert.match(text, /greyfleet_invalid_requests_total\{field="client_address"\} 1/);
    assert.match(text, /greyfleet_store_up\{store="redis"\} 1/);
    assert.match(text, /greyfleet_build_info\{version="[^"]+",command="serve"\} 1/);
  });
});
