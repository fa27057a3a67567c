/** SIGTERM: stop accepting, let in-flight calls finish, exit 0. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { rcpt } from "../support/engine";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { TestClient } from "../support/grpc-clients";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { waitFor } from "../support/wait";

describe("graceful shutdown", () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    await redis?.stop();
  });

  it("finishes a call in flight when SIGTERM arrives, then exits 0", async () => {
    const proc = await GreyfleetProcess.start([
      "serve",
      "--store",
      redis.url,
      "--redis-key-prefix",
      uniquePrefix(),
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
      "--store-timeout",
      "5s",
    ]);
    const client = new TestClient(proc.grpcAddress);
    await client.check(rcpt({ recipient: "warm-up@example.com" }));
    // Pause Redis writes: the next decision blocks inside Redis, visibly (CLIENT LIST flags=b).
    const admin = redis.client();
    await admin.call("CLIENT", "PAUSE", "10000", "WRITE");
    const inFlight = client.check(rcpt({ recipient: "in-flight@example.com" }), 15_000);
    await waitFor("the decision to block in Redis", async () =>
      /flags=b .*cmd=evalsha/.test(String(await admin.call("CLIENT", "LIST"))),
    );
    const exit = proc.stop("SIGTERM");
    await waitFor("the shutdown to begin", () => proc.lines.some((line) => /msg="shutting down"/.test(line)));
    assert.equal(proc.child.exitCode, null, "still running while a call is in flight");
    await assert.rejects(
      new TestClient(proc.grpcAddress).check(rcpt({ recipient: "late@example.com" }), 2_000),
      "no new calls once shutting down",
    );
    await admin.call("CLIENT", "UNPAUSE");
    const response = await inFlight;
    assert.equal(response.reason, Reason.REASON_NEW_TRIPLET, "decided by the store, not cut off");
    assert.equal(await exit, 0);
    admin.disconnect();
    client.close();
  });
});
