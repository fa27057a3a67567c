/**
 * A CheckStream client that does not read its answers: HTTP/2 flow control holds the answers
 * back, and the service stops reading that stream's checks until they are taken, so a client
 * cannot make it decide and hold answers without bound. Other clients are served meanwhile, and
 * once the client reads again every check is answered. Driven by a raw node:http2 client with a
 * tiny receive window, against a real `greyfleet serve`.
 */
import assert from "node:assert/strict";
import { type ClientHttp2Stream, connect, constants } from "node:http2";
import { after, before, describe, it } from "node:test";
import { Client, credentials } from "@grpc/grpc-js";
import { Action, CheckStreamRequest, CheckStreamResponse } from "../../services/contract/gen/greyfleet/v1/greylist";
import { CHECK_STREAMS_OPEN, DECISIONS_TOTAL } from "../../services/shared/metric-names";
import { rcpt } from "../support/engine";
import { GreyfleetProcess, scrapedMetric } from "../support/greyfleet-process";
import { TestClient } from "../support/grpc-clients";
import { waitFor } from "../support/wait";

const MESSAGES = 2_000;
const CHECKS_PER_MESSAGE = 50;
const CHECKS = MESSAGES * CHECKS_PER_MESSAGE;
/** A count that stops moving: this many equal readings in a row, this far apart (at least 1 s in all). */
const STEADY_READINGS = 4;
const STEADY_EVERY_MS = 350;

/** One length-prefixed gRPC message. */
function grpcFrame(body: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  return frame;
}

/** Distinct checks (each from its own /24, so every one is a new triplet). */
function message(first: number): Buffer {
  const checks = Array.from({ length: CHECKS_PER_MESSAGE }, (_, k) => {
    const id = first + k;
    return {
      id: String(id),
      timeoutMs: 0,
      traceparent: "",
      check: rcpt({ clientAddress: `10.${(id >> 16) & 255}.${(id >> 8) & 255}.1`, recipient: `r${id}@example.com` }),
    };
  });
  return grpcFrame(CheckStreamRequest.encode({ checks }).finish());
}

describe("CheckStream backpressure", () => {
  let serve: GreyfleetProcess;
  before(async () => {
    serve = await GreyfleetProcess.start([
      "serve",
      "--store",
      "memory:",
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "127.0.0.1:0",
    ]);
  });
  after(() => serve.stop());

  it("stops reading a stream whose answers are not taken, serves others, and answers everything later", async () => {
    const decided = () => scrapedMetric(serve.metricsAddress, DECISIONS_TOTAL);
    // The client holds its unsent checks itself: room for all of them (MB).
    const session = connect(`http://${serve.grpcAddress}`, {
      settings: { initialWindowSize: 1024 },
      maxSessionMemory: 100,
    });
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": "/greyfleet.v1.GreylistService/CheckStream",
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.pause(); // the client takes no answers
      for (let i = 0; i < MESSAGES; i++) stream.write(message(i * CHECKS_PER_MESSAGE));

      // The service decides what fits in the buffers between it and the client, then stops: the
      // count stays put over several readings spanning more than a second, longer than a stall
      // (a collection, a busy machine) that would look like a stop between two readings.
      const readings: number[] = [];
      const plateau = await waitFor(
        "the service to stop deciding the stalled stream's checks",
        async () => {
          readings.push(await decided());
          const last = readings.slice(-STEADY_READINGS);
          const [first] = last;
          const steady = last.length === STEADY_READINGS && last.every((count) => count === first);
          return steady && first !== undefined && first > 0 ? first : undefined;
        },
        20_000,
        STEADY_EVERY_MS,
      );
      // The buffers hold about 15% of them; half would mean the stream was read on regardless.
      assert.ok(
        plateau < CHECKS / 2,
        `decided ${plateau} of ${CHECKS} checks for a client that reads nothing (readings ${readings.join(", ")})`,
      );

      // Another client is answered meanwhile.
      const other = new TestClient(serve.grpcAddress);
      try {
        assert.equal((await other.check(rcpt({ clientAddress: "192.0.2.99" }), 2_000)).action, Action.ACTION_DEFER);
      } finally {
        other.close();
      }

      // Reading again: every check gets its answer, none lost.
      let answers = 0;
      let buffered = Buffer.alloc(0);
      stream.on("data", (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
          const length = buffered.readUInt32BE(1);
          answers += CheckStreamResponse.decode(buffered.subarray(5, 5 + length)).answers.length;
          buffered = buffered.subarray(5 + length);
        }
      });
      stream.resume();
      await waitFor(`${CHECKS} answers`, () => answers === CHECKS, 60_000);
      assert.equal(await decided(), CHECKS + 1);
      stream.close();
    } finally {
      session.close();
    }
  });

  /** A raw CheckStream on a session with a tiny receive window, its answers not taken. */
  const stalledStream = (session: ReturnType<typeof connect>): ClientHttp2Stream => {
    const stream = session.request({
      ":method": "POST",
      ":path": "/greyfleet.v1.GreylistService/CheckStream",
      "content-type": "application/grpc",
      te: "trailers",
    });
    stream.pause();
    return stream;
  };
  const openStreams = () => scrapedMetric(serve.metricsAddress, CHECK_STREAMS_OPEN);

  it("forgets a stalled stream its client cancels (a paused stream never ends by itself)", async () => {
    const decided = () => scrapedMetric(serve.metricsAddress, DECISIONS_TOTAL);
    const session = connect(`http://${serve.grpcAddress}`, { settings: { initialWindowSize: 1024 } });
    try {
      const stream = stalledStream(session);
      const before = await decided();
      for (let i = 0; i < 400; i++) stream.write(message(CHECKS + 1_000 + i * CHECKS_PER_MESSAGE));
      // The service has stopped reading it: its answers are not taken.
      const readings: number[] = [];
      await waitFor(
        "the service to stop deciding the stalled stream's checks",
        async () => {
          readings.push(await decided());
          const last = readings.slice(-STEADY_READINGS);
          return last.length === STEADY_READINGS && last.every((count) => count === last[0]) && last[0] !== before;
        },
        20_000,
        STEADY_EVERY_MS,
      );
      assert.equal(await openStreams(), 1);
      stream.close(constants.NGHTTP2_CANCEL);
      await waitFor("the cancelled stream to be forgotten", async () => (await openStreams()) === 0, 5_000);
    } finally {
      session.close();
    }
  });

  it("echoes any 64-bit check id exactly, beyond the 2^53 a JavaScript number holds", async () => {
    const client = new Client(serve.grpcAddress, credentials.createInsecure());
    try {
      const call = client.makeBidiStreamRequest(
        "/greyfleet.v1.GreylistService/CheckStream",
        (message: CheckStreamRequest) => Buffer.from(CheckStreamRequest.encode(message).finish()),
        (bytes: Buffer) => CheckStreamResponse.decode(bytes),
      );
      const ids = ["18446744073709551615", "9007199254740993", "1"];
      const answered: [string, number][] = [];
      const all = new Promise<void>((resolve, reject) => {
        call.on("data", (message: CheckStreamResponse) => {
          for (const answer of message.answers) answered.push([answer.id, answer.errorCode]);
          if (answered.length >= ids.length) resolve();
        });
        call.on("error", reject);
      });
      const check = (k: number) => rcpt({ clientAddress: `192.0.2.${k + 1}`, recipient: `id-${k}@example.com` });
      call.write({ checks: ids.map((id, k) => ({ id, timeoutMs: 0, traceparent: "", check: check(k) })) });
      await all;
      call.end();
      assert.deepEqual(answered.sort(), ids.map((id) => [id, 0]).sort());
    } finally {
      client.close();
    }
  });

  it("ends a stream whose message holds more checks than the contract allows, with the reason", async () => {
    const session = connect(`http://${serve.grpcAddress}`);
    try {
      const stream = stalledStream(session);
      // The status comes in the trailers, or alone in the response headers (a trailers-only answer).
      const trailers = new Promise<Record<string, unknown>>((resolve) => {
        stream.once("response", (headers) => {
          if (headers["grpc-status"] !== undefined) resolve(headers);
        });
        stream.once("trailers", resolve);
      });
      stream.resume();
      const checks = Array.from({ length: 257 }, (_, id) => ({
        id: String(id),
        timeoutMs: 0,
        traceparent: "",
        check: rcpt(),
      }));
      stream.write(grpcFrame(CheckStreamRequest.encode({ checks }).finish()));
      const status = await trailers;
      assert.equal(status["grpc-status"], "3", "INVALID_ARGUMENT");
      assert.match(decodeURIComponent(String(status["grpc-message"])), /257 checks in one message, over 256/);
      await waitFor("the ended stream to be forgotten", async () => (await openStreams()) === 0, 5_000);
    } finally {
      session.close();
    }
  });
});
