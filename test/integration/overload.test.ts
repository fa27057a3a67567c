/**
 * The decision service's limits on what it takes on at once: --max-checks-in-flight (unary and
 * streamed checks together) and --max-check-streams. Beyond either, the call is refused at once
 * with RESOURCE_EXHAUSTED and counted, and the service takes work again as soon as it has room.
 * Checks are held in flight for real: Redis is paused for writes (CLIENT PAUSE WRITE), so each
 * decision waits inside Redis.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { Action } from "../../services/contract/gen/greyfleet/v1/greylist";
import { GrpcDecider } from "../../services/shared/decision-client";
import { GreyfleetError } from "../../services/shared/errors";
import { CHECK_STREAMS_OPEN, OVERLOAD_REFUSALS_TOTAL } from "../../services/shared/metric-names";
import { rcpt } from "../support/engine";
import { GreyfleetProcess, scrapedMetric } from "../support/greyfleet-process";
import { grpcError, TestClient } from "../support/grpc-clients";
import { heldEvalsha, RedisServer, uniquePrefix } from "../support/redis-server";
import { waitFor } from "../support/wait";

const MAX_CHECKS = 3;
const MAX_STREAMS = 2;

describe("overload limits", () => {
  let redis: RedisServer;
  let serve: GreyfleetProcess;
  before(async () => {
    redis = await RedisServer.start();
    serve = await GreyfleetProcess.start([
      "serve",
      "--store",
      redis.url,
      "--redis-key-prefix",
      uniquePrefix(),
      "--store-timeout",
      "20s",
      "--max-checks-in-flight",
      String(MAX_CHECKS),
      "--max-check-streams",
      String(MAX_STREAMS),
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
    ]);
  });
  after(async () => {
    await serve?.stop();
    await redis?.stop();
  });

  const refusals = (limit: string) => scrapedMetric(serve.metricsAddress, OVERLOAD_REFUSALS_TOTAL, { limit });

  it("refuses a check over --max-checks-in-flight at once, unary or streamed, and takes checks again once there is room", async () => {
    const admin = redis.client();
    const unary = new TestClient(serve.grpcAddress);
    const streamed = new GrpcDecider(serve.grpcAddress, 20_000);
    try {
      assert.equal(await refusals("checks_in_flight"), 0);
      // Warm: the decision script is loaded and the stream open before Redis is paused.
      assert.equal((await streamed.check(rcpt({ recipient: "warm@example.com" }))).action, Action.ACTION_DEFER);
      await admin.call("CLIENT", "PAUSE", "20000", "WRITE");
      // Two unary checks and one streamed: the limit is for all of them together.
      const held = [
        unary.check(rcpt({ recipient: "held-1@example.com" }), 20_000),
        unary.check(rcpt({ recipient: "held-2@example.com" }), 20_000),
        streamed.check(rcpt({ recipient: "held-3@example.com" })),
      ];
      for (const check of held) check.catch(() => {}); // awaited below; a failure before then fails the test there
      await waitFor("a held decision in Redis", () => heldEvalsha([admin]));

      const started = Date.now();
      const error = grpcError(await unary.check(rcpt({ recipient: "over-1@example.com" })).catch((e: unknown) => e));
      assert.equal(error.code, status.RESOURCE_EXHAUSTED);
      assert.match(error.details, /3 checks in flight \(--max-checks-in-flight\)/);
      await assert.rejects(streamed.check(rcpt({ recipient: "over-2@example.com" })), (thrown: unknown) => {
        assert.ok(thrown instanceof GreyfleetError, String(thrown));
        assert.equal(thrown.code, "unavailable"); // what a shim's failure mode (or another replica) takes
        assert.match(thrown.message, /--max-checks-in-flight/);
        return true;
      });
      assert.ok(Date.now() - started < 5_000, "refused at once, not after the held checks");
      assert.equal(await refusals("checks_in_flight"), 2);

      await admin.call("CLIENT", "UNPAUSE");
      const answers = await Promise.all(held);
      assert.deepEqual(
        answers.map((answer) => answer.action),
        [Action.ACTION_DEFER, Action.ACTION_DEFER, Action.ACTION_DEFER],
      );
      assert.equal((await unary.check(rcpt({ recipient: "after@example.com" }))).action, Action.ACTION_DEFER);
      assert.equal((await streamed.check(rcpt({ recipient: "after@example.com" }))).action, Action.ACTION_DEFER);
      // A check that fails frees its place too: as many invalid ones as the limit, then a good one.
      for (let i = 0; i < MAX_CHECKS; i++) {
        const invalid = grpcError(
          await unary.check(rcpt({ clientAddress: "not-an-address" })).catch((e: unknown) => e),
        );
        assert.equal(invalid.code, status.INVALID_ARGUMENT);
      }
      assert.equal((await unary.check(rcpt({ recipient: "after-invalid@example.com" }))).action, Action.ACTION_DEFER);
      assert.equal(await refusals("checks_in_flight"), 2);
    } finally {
      await admin.call("CLIENT", "UNPAUSE");
      admin.disconnect();
      unary.close();
      streamed.close();
    }
  });

  it("ends a CheckStream over --max-check-streams at once, and opens one again once another has closed", async () => {
    const shims = [0, 1, 2].map(() => new GrpcDecider(serve.grpcAddress, 5_000));
    const [first, second, third] = shims;
    assert.ok(first && second && third);
    try {
      const streams = () => scrapedMetric(serve.metricsAddress, CHECK_STREAMS_OPEN);
      await first.check(rcpt({ recipient: "stream-1@example.com" }));
      await second.check(rcpt({ recipient: "stream-2@example.com" }));
      assert.equal(await streams(), MAX_STREAMS);

      await assert.rejects(third.check(rcpt({ recipient: "stream-3@example.com" })), (thrown: unknown) => {
        assert.ok(thrown instanceof GreyfleetError, String(thrown));
        assert.equal(thrown.code, "unavailable");
        assert.match(thrown.message, /2 CheckStreams open \(--max-check-streams\)/);
        return true;
      });
      assert.equal(await refusals("check_streams"), 1);
      assert.equal(await streams(), MAX_STREAMS, "the refused stream was never counted");

      first.close();
      await waitFor("the closed stream to be forgotten", async () => (await streams()) === 1);
      assert.equal((await third.check(rcpt({ recipient: "stream-3@example.com" }))).action, Action.ACTION_DEFER);
      assert.equal(await streams(), MAX_STREAMS);
      assert.equal(await refusals("check_streams"), 1);
    } finally {
      for (const shim of shims) shim.close();
    }
  });
});
