/** SIGTERM: stop accepting, let in-flight calls and messages finish, exit 0. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { rcpt } from "../support/engine";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { TestClient } from "../support/grpc-clients";
import { assertContinue, assertReplyCode, GREYLISTED, ipv4, smtpSession } from "../support/milter-client";
import { heldEvalsha, RedisServer, uniquePrefix } from "../support/redis-server";
import { waitFor } from "../support/wait";

describe("graceful shutdown", () => {
  let redis: RedisServer;
  before(async () => {
    redis = await RedisServer.start();
  });
  after(async () => {
    await redis?.stop();
  });
  /** `greyfleet <command>` on the test's Redis with its own key prefix, gRPC on a free port. */
  const start = (command: "serve" | "all", ...extra: string[]) =>
    GreyfleetProcess.start([
      command,
      "--store",
      redis.url,
      "--redis-key-prefix",
      uniquePrefix(),
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
      ...extra,
    ]);

  it("finishes a call in flight when SIGTERM arrives, then exits 0", async () => {
    const proc = await start("serve", "--store-timeout", "5s");
    const client = new TestClient(proc.grpcAddress);
    const admin = redis.client();
    let late: TestClient | undefined;
    try {
      await client.check(rcpt({ recipient: "warm-up@example.com" }));
      // Pause Redis writes: the next decision blocks inside Redis, visibly (CLIENT LIST flags=b).
      await admin.call("CLIENT", "PAUSE", "10000", "WRITE");
      const inFlight = client.check(rcpt({ recipient: "in-flight@example.com" }), 15_000);
      await waitFor("the decision to block in Redis", () => heldEvalsha([admin]));
      const exit = proc.stop("SIGTERM");
      await waitFor("the shutdown to begin", () => proc.lines.some((line) => /msg="shutting down"/.test(line)));
      assert.equal(proc.child.exitCode, null, "still running while a call is in flight");
      late = new TestClient(proc.grpcAddress);
      await assert.rejects(
        late.check(rcpt({ recipient: "late@example.com" }), 2_000),
        "no new calls once shutting down",
      );
      await admin.call("CLIENT", "UNPAUSE");
      const response = await inFlight;
      assert.equal(response.reason, Reason.REASON_NEW_TRIPLET, "decided by the store, not cut off");
      assert.equal(await exit, 0);
    } finally {
      // However the test ends: Redis takes writes again and nothing it started keeps running.
      await admin.call("CLIENT", "UNPAUSE").catch(() => undefined);
      admin.disconnect();
      client.close();
      late?.close();
      await proc.stop("SIGKILL");
    }
  });

  it("lets a milter session finish the message in progress; a session between messages does not hold it up", async () => {
    const proc = await start("all", "--policy-listen", "", "--milter-listen", "127.0.0.1:0");
    try {
      const milter = proc.logged(/milter server listening/, "milter");
      const waiting = await smtpSession(milter, ipv4("192.0.2.60")); // connected, no message yet
      const busy = await smtpSession(milter, ipv4("192.0.2.61"));
      assertContinue(await busy.mail("shutdown@example.org"));
      assertReplyCode(await busy.rcpt("first@example.com"), GREYLISTED);
      const exit = proc.stop("SIGTERM");
      await waitFor("the shutdown to begin", () => proc.lines.some((line) => /msg="shutting down"/.test(line)));
      // The message goes on: another recipient is still decided.
      assertReplyCode(await busy.rcpt("second@example.com"), GREYLISTED);
      assert.equal(proc.child.exitCode, null, "still running while a message is in progress");
      busy.abort(); // the MTA ends the message: nothing is in progress any more
      assert.equal(await exit, 0);
      await Promise.all([busy.closed, waiting.closed]);
    } finally {
      await proc.stop("SIGKILL"); // a no-op once it exited; its sessions close with it
    }
  });
});
