/** The shims' streaming gRPC client against a real decision service process. */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { ClientDuplexStream } from "@grpc/grpc-js";
import { Action, Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { GrpcDecider } from "../../services/shared/decision-client";
import { GreyfleetError } from "../../services/shared/errors";
import { rcpt } from "../support/engine";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { freePort } from "../support/ports";
import { heldEvalsha, RedisServer, uniquePrefix } from "../support/redis-server";
import { waitFor } from "../support/wait";

function rejectsWith(code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof GreyfleetError, String(error));
    assert.equal(error.code, code);
    return true;
  };
}

describe("GrpcDecider", () => {
  let port: number;
  let service: GreyfleetProcess;
  let decider: GrpcDecider;
  const start = () =>
    GreyfleetProcess.start([
      "serve",
      "--store",
      "memory:",
      "--listen",
      `127.0.0.1:${port}`,
      "--metrics-listen",
      "",
      "--shutdown-grace",
      "5s",
    ]);

  before(async () => {
    port = await freePort();
    service = await start();
    decider = new GrpcDecider(`127.0.0.1:${port}`, 1_000);
  });
  after(async () => {
    decider?.close();
    await service?.stop();
  });

  it("answers many concurrent checks on one stream, each with its own answer", async () => {
    const responses = await Promise.all(
      Array.from({ length: 200 }, (_, i) => decider.check(rcpt({ recipient: `r${i % 100}@example.com` }))),
    );
    const reasons = responses.map((r) => r.reason);
    assert.equal(reasons.filter((r) => r === Reason.REASON_NEW_TRIPLET).length, 100);
    assert.equal(reasons.filter((r) => r === Reason.REASON_TOO_EARLY).length, 100);
  });

  it("fails an invalid check alone; the stream goes on", async () => {
    await assert.rejects(decider.check(rcpt({ clientAddress: "nope" })), rejectsWith("invalid_argument"));
    assert.equal((await decider.check(rcpt({ recipient: "after-invalid@example.com" }))).action, Action.ACTION_DEFER);
  });

  it("sends a check asked just after its stream broke on the new stream, not with the old one's batch", async () => {
    const own = new GrpcDecider(`127.0.0.1:${port}`, 1_000);
    try {
      const first = own.check(rcpt({ recipient: "before-break@example.com" }));
      // The stream the first check waits to go out on breaks before it is sent (cancelled here:
      // a reset from the network cannot be timed this exactly); a check asked at that moment
      // opens a new stream.
      const broken = (own as unknown as { stream: ClientDuplexStream<unknown, unknown> }).stream;
      const second = new Promise<unknown>((resolve, reject) => {
        broken.once("error", () => own.check(rcpt({ recipient: "after-break@example.com" })).then(resolve, reject));
      });
      broken.cancel();
      await assert.rejects(first, rejectsWith("unavailable"));
      assert.equal(((await second) as { reason: Reason }).reason, Reason.REASON_NEW_TRIPLET);
    } finally {
      own.close();
    }
  });

  it("retired, answers the checks it has in flight, takes no new one, then closes its channel", async () => {
    const own = new GrpcDecider(`127.0.0.1:${port}`, 5_000);
    try {
      await own.check(rcpt({ recipient: "before-retire@example.com" })); // the stream is open
      service.child.kill("SIGSTOP"); // the check below stays in flight until the service resumes
      const inFlight = own.check(rcpt({ recipient: "in-flight-retire@example.com" }));
      own.retire();
      await assert.rejects(own.check(rcpt({ recipient: "after-retire@example.com" })), rejectsWith("unavailable"));
      service.child.kill("SIGCONT");
      assert.equal((await inFlight).reason, Reason.REASON_NEW_TRIPLET, "answered, not failed by the retirement");
      assert.equal(own.connected(), false, "closed once nothing was in flight");
    } finally {
      service.child.kill("SIGCONT");
      own.close();
    }
  });

  it("gives up at the deadline when the service stops answering, and works again when it resumes", async () => {
    service.child.kill("SIGSTOP");
    try {
      const started = Date.now();
      await assert.rejects(
        decider.check(rcpt({ recipient: "frozen@example.com" }), { deadlineMs: Date.now() + 200 }),
        rejectsWith("deadline_exceeded"),
      );
      assert.ok(Date.now() - started < 1_000);
    } finally {
      service.child.kill("SIGCONT");
    }
    assert.equal((await decider.check(rcpt({ recipient: "thawed@example.com" }))).action, Action.ACTION_DEFER);
  });

  it("fails fast while the service is down and reconnects by itself when it is back", async () => {
    assert.equal(await service.stop("SIGKILL"), null);
    await assert.rejects(decider.check(rcpt({ recipient: "down@example.com" })), rejectsWith("unavailable"));
    service = await start();
    const response = await waitFor("the client to reconnect", () =>
      decider.check(rcpt({ recipient: "back@example.com" })).catch(() => undefined),
    );
    assert.equal(response.reason, Reason.REASON_NEW_TRIPLET);
  });

  it("gets answers for checks in flight when the service shuts down gracefully", async () => {
    // Its own service on a Redis that holds the checks: in flight at the service, not on the wire,
    // when SIGTERM arrives (the memory store answers before a signal could catch them).
    const redis = await RedisServer.start();
    const admin = redis.client();
    let started: GreyfleetProcess | undefined;
    let opened: GrpcDecider | undefined;
    try {
      const draining = await GreyfleetProcess.start([
        "serve",
        "--store",
        redis.url,
        "--redis-key-prefix",
        uniquePrefix(),
        "--store-timeout",
        "5s",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "",
        "--shutdown-grace",
        "5s",
      ]);
      started = draining;
      const own = new GrpcDecider(draining.grpcAddress, 10_000);
      opened = own;
      await own.check(rcpt({ recipient: "warm-up@example.com" }));
      await admin.call("CLIENT", "PAUSE", "10000", "WRITE");
      // Asked in one turn, so sent in one message: once one of them waits in Redis, the service
      // has taken every one of them in.
      const inFlight = Promise.allSettled(
        Array.from({ length: 50 }, (_, i) => own.check(rcpt({ recipient: `drain${i}@example.com` }))),
      );
      await waitFor("the checks to wait in Redis", () => heldEvalsha([admin]));
      const exit = draining.stop("SIGTERM");
      await waitFor("the shutdown to begin", () => draining.lines.some((line) => /msg="shutting down"/.test(line)));
      // A check asked now is refused at once, on the stream the ones in flight keep open.
      await assert.rejects(own.check(rcpt({ recipient: "late@example.com" })), rejectsWith("unavailable"));
      await admin.call("CLIENT", "UNPAUSE");
      const settled = await inFlight;
      const refused = settled.flatMap((result) => (result.status === "rejected" ? [String(result.reason)] : []));
      assert.deepEqual(refused, [], "every check in flight was answered");
      for (const result of settled) {
        if (result.status === "fulfilled") assert.equal(result.value.reason, Reason.REASON_NEW_TRIPLET);
      }
      assert.equal(await exit, 0);
    } finally {
      await admin.call("CLIENT", "UNPAUSE").catch(() => undefined);
      admin.disconnect();
      opened?.close();
      await started?.stop("SIGKILL");
      await redis.stop();
    }
  });
});
