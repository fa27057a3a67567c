/** The decision service with its Redis stopped and restarted: failure modes and recovery. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Action, Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { rcpt } from "../support/engine";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { healthStatus, TestClient } from "../support/grpc-clients";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { startAll } from "../support/start-all";
import { waitFor } from "../support/wait";

describe("store outage", () => {
  let redis: RedisServer;
  let open: GreyfleetProcess;
  let tempfail: GreyfleetProcess;
  let openClient: TestClient;
  let tempfailClient: TestClient;

  before(async () => {
    redis = await RedisServer.start();
    const args = (mode: string) => [
      "serve",
      "--store",
      redis.url,
      "--redis-key-prefix",
      uniquePrefix(),
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
      "--failure-mode",
      mode,
      "--health-interval",
      "100ms",
      "--store-timeout",
      "200ms",
    ];
    [open, tempfail] = await startAll([GreyfleetProcess.start(args("open")), GreyfleetProcess.start(args("tempfail"))]);
    openClient = new TestClient(open.grpcAddress);
    tempfailClient = new TestClient(tempfail.grpcAddress);
  });

  after(async () => {
    openClient?.close();
    tempfailClient?.close();
    await open?.stop();
    await tempfail?.stop();
    await redis?.stop();
  });

  it("decides normally while Redis is up", async () => {
    assert.equal((await openClient.check(rcpt())).reason, Reason.REASON_NEW_TRIPLET);
  });

  it("answers by the failure mode while Redis is down, and reports NOT_SERVING", async () => {
    await redis.stop();
    const accepted = await openClient.check(rcpt({ recipient: "during-outage@example.com" }));
    assert.deepEqual([accepted.action, accepted.reason], [Action.ACTION_ACCEPT, Reason.REASON_STORE_UNAVAILABLE]);
    const deferred = await tempfailClient.check(rcpt({ recipient: "during-outage@example.com" }));
    assert.deepEqual([deferred.action, deferred.reason], [Action.ACTION_DEFER, Reason.REASON_STORE_UNAVAILABLE]);
    assert.equal(`${deferred.smtpCode} ${deferred.enhancedStatusCode}`, "451 4.3.0");
    const service = "greyfleet.v1.GreylistService";
    await waitFor("NOT_SERVING", async () => (await healthStatus(open.grpcAddress, service)) === "NOT_SERVING");
    assert.equal(await healthStatus(open.grpcAddress), "SERVING", "the process itself stays live");
    const metrics = await (await fetch(`http://${open.metricsAddress}/metrics`)).text();
    assert.match(metrics, /greyfleet_failure_mode_activations_total\{mode="open"\} 1/);
    assert.match(metrics, /greyfleet_store_up\{store="redis"\} 0/);
    assert.equal(open.child.exitCode, null, "the service is still running");
    assert.ok(open.lines.some((line) => /store unavailable: failure mode decides/.test(line)));
  });

  it("recovers by itself when Redis is back", async () => {
    await redis.restart();
    const service = "greyfleet.v1.GreylistService";
    await waitFor("SERVING again", async () => (await healthStatus(open.grpcAddress, service)) === "SERVING");
    await waitFor(
      "tempfail service SERVING",
      async () => (await healthStatus(tempfail.grpcAddress, service)) === "SERVING",
    );
    const response = await openClient.check(rcpt({ recipient: "after-outage@example.com" }));
    assert.deepEqual([response.action, response.reason], [Action.ACTION_DEFER, Reason.REASON_NEW_TRIPLET]);
    const other = await tempfailClient.check(rcpt({ recipient: "after-outage@example.com" }));
    assert.equal(other.reason, Reason.REASON_NEW_TRIPLET);
  });
});
