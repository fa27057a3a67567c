/**
 * Hostile input to the decision service over real gRPC: 10,000 generated CheckRequests (any
 * text in every field, unknown enum values, over-long values) and 2,000 request bodies of raw
 * bytes, against a `greyfleet serve` process. Each call ends with a well-formed answer or
 * INVALID_ARGUMENT with a short message (raw bytes may also get grpc-js's INTERNAL for a body
 * that is not protobuf); never a hang, never a crash, and the service answers properly after.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { credentials, Metadata, makeGenericClientConstructor, type ServiceError, status } from "@grpc/grpc-js";
import fc from "fast-check";
import {
  Action,
  CheckRequest,
  type CheckResponse,
  GreylistServiceService,
  Reason,
} from "../../services/contract/gen/greyfleet/v1/greylist";
import { rcpt } from "../support/engine";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { healthStatus, TestClient } from "../support/grpc-clients";

const RUNS = 10_000;
const RAW_RUNS = 2_000;

/** Text a peer might put in a field: plausible values, any Unicode, control characters, huge. */
const text = fc.oneof(
  fc.constantFrom("", "198.51.100.7", "2001:db8::7", "<>", "bob@example.com", "RCPT", "unknown", "mx1"),
  fc.string({ unit: "binary", maxLength: 80 }),
  fc.string({ unit: "grapheme", maxLength: 40 }),
  fc.integer({ min: 300, max: 70_000 }).map((n) => "x".repeat(n)),
);

const TEXT_FIELDS = [
  "clientAddress",
  "clientName",
  "heloName",
  "sender",
  "recipient",
  "saslUsername",
  "queueId",
  "instance",
  "mtaId",
] as const;

/** A proper request with one to three fields replaced by anything, or every field anything. */
const request = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .tuple(
        fc.uniqueArray(fc.constantFrom(...TEXT_FIELDS), { minLength: 1, maxLength: 3 }),
        fc.array(text, { minLength: 3, maxLength: 3 }),
        fc.option(fc.integer({ min: -3, max: 9 })),
      )
      .map(([fields, values, protocolState]) => {
        const generated = rcpt({ recipient: `fuzz-${values.join("").length}@example.com` });
        fields.forEach((field, i) => {
          generated[field] = values[i] ?? "";
        });
        if (protocolState !== null) generated.protocolState = protocolState;
        return generated;
      }),
  },
  {
    weight: 1,
    arbitrary: fc
      .record({
        ...Object.fromEntries(TEXT_FIELDS.map((field) => [field, text])),
        protocolState: fc.integer({ min: -3, max: 9 }),
      })
      .map((fields) => CheckRequest.fromPartial(fields)),
  },
);

/** Every answer: a known action and reason, SMTP fields that cannot break an SMTP reply. */
function assertWellFormed(response: CheckResponse): void {
  assert.ok([Action.ACTION_ACCEPT, Action.ACTION_DEFER, Action.ACTION_REJECT].includes(response.action));
  assert.ok(Object.values(Reason).includes(response.reason) && response.reason !== Reason.REASON_UNSPECIFIED);
  for (const field of [response.smtpText, response.enhancedStatusCode, response.xGreylistHeader]) {
    assert.ok(!/[\r\n]/.test(field) && field.length <= 1_000, JSON.stringify(field));
  }
}

describe("decision service under hostile gRPC input", () => {
  let service: GreyfleetProcess;
  let client: TestClient;

  before(async () => {
    service = await GreyfleetProcess.start(["serve", "--store", "memory:", "--listen", "127.0.0.1:0"]);
    client = new TestClient(service.grpcAddress);
  });
  after(async () => {
    client?.close();
    assert.equal(await service?.stop(), 0);
  });

  it(`answers ${RUNS} generated CheckRequests well-formed or INVALID_ARGUMENT`, async () => {
    const outcomes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(request, async (generated) => {
        try {
          assertWellFormed(await client.check(generated));
          outcomes.set("answered", (outcomes.get("answered") ?? 0) + 1);
        } catch (error) {
          const { code, details } = error as ServiceError;
          assert.equal(code, status.INVALID_ARGUMENT, `${code}: ${details}`);
          assert.ok(details.length <= 500, details);
          outcomes.set("invalid", (outcomes.get("invalid") ?? 0) + 1);
        }
      }),
      { numRuns: RUNS },
    );
    // Both ends are reached: generated requests the service decides, and ones it refuses.
    assert.ok(
      (outcomes.get("answered") ?? 0) > 100 && (outcomes.get("invalid") ?? 0) > 100,
      JSON.stringify([...outcomes]),
    );
  });

  it(`answers ${RAW_RUNS} request bodies of raw bytes without a hang`, async () => {
    const Raw = makeGenericClientConstructor({}, "Raw");
    const raw = new Raw(service.grpcAddress, credentials.createInsecure());
    const path = GreylistServiceService.check.path;
    try {
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ maxLength: 256 }), async (bytes) => {
          const code = await new Promise<number>((resolve) => {
            raw.makeUnaryRequest(
              path,
              (value: Uint8Array) => Buffer.from(value),
              (reply: Buffer) => reply,
              bytes,
              new Metadata(),
              { deadline: Date.now() + 5_000 },
              (error: ServiceError | null) => resolve(error ? error.code : status.OK),
            );
          });
          assert.ok([status.OK, status.INVALID_ARGUMENT, status.INTERNAL].includes(code), `status ${code}`);
        }),
        { numRuns: RAW_RUNS },
      );
    } finally {
      raw.close();
    }
  });

  it("afterwards is SERVING and decides a proper request", async () => {
    assert.equal(await healthStatus(service.grpcAddress), "SERVING");
    const response = await client.check(rcpt({ recipient: "after-fuzz@example.com" }));
    assert.deepEqual([response.action, response.reason], [Action.ACTION_DEFER, Reason.REASON_NEW_TRIPLET]);
    assert.equal(service.child.exitCode, null);
  });
});
