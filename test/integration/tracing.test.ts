/**
 * OpenTelemetry tracing: one trace per recipient from the shim through gRPC to the store, first
 * in this process (the SDK with an in-memory exporter, the decision service wired in-process on
 * a real gRPC port), then across real `greyfleet serve` and `greyfleet policy` processes
 * exporting OTLP/HTTP JSON to a receiver the test runs; and nothing at all when tracing is off.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { Action, Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { type DecisionService, startDecisionService } from "../../services/decision/main";
import { MemoryStore } from "../../services/decision/store/memory";
import { isConfigProblem, loadConfig } from "../../services/shared/config";
import { GrpcDecider } from "../../services/shared/decision-client";
import { createLogger } from "../../services/shared/logging";
import { createDecisionMetrics, createRegistry } from "../../services/shared/metrics";
import { ShimDecisions } from "../../services/shared/shim-decision";
import { createShimMetrics } from "../../services/shared/shim-metrics";
import { ATTRIBUTES, endShimSpan, SPAN_NAMES, startShimSpan, tracingSettings } from "../../services/shared/tracing";
import { startTracing, type Tracing } from "../../services/shared/tracing-init";
import { rcpt, testEngine } from "../support/engine";
import { GreyfleetProcess, runGreyfleet } from "../support/greyfleet-process";
import { TestClient } from "../support/grpc-clients";
import { PolicyClient } from "../support/policy-client";
import { freePort } from "../support/ports";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { waitFor } from "../support/wait";

const quiet = createLogger({ level: "error", format: "text" }, () => {});

/** What the default test request carries that must never appear in a span. */
const PERSONAL = ["192.0.2.10", "alice", "bob", "example.org", "example.com", "@"];
const IPV4 = /\b\d{1,3}(?:\.\d{1,3}){3}\b/;

function assertNoPersonalData(attributes: Readonly<Record<string, unknown>>, where: string): void {
  for (const [key, value] of Object.entries(attributes)) {
    const text = String(value);
    for (const needle of PERSONAL) assert.ok(!text.includes(needle), `${where}: ${key}=${text} has "${needle}"`);
    assert.ok(!IPV4.test(text), `${where}: ${key}=${text} looks like an address`);
  }
}

function shimDecisions(decider: ConstructorParameters<typeof ShimDecisions>[0]): ShimDecisions {
  return new ShimDecisions(decider, {
    shim: "policy",
    timeoutMs: 1_000,
    failureMode: "open",
    failureLogIntervalMs: 60_000,
    metrics: createShimMetrics(createRegistry("test"), "policy"),
    log: quiet,
  });
}

describe("tracing settings from OTEL_* variables", () => {
  const cases: [string, NodeJS.ProcessEnv, unknown][] = [
    ["nothing set: off", {}, { enabled: false }],
    [
      "an OTLP endpoint: on, protobuf",
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" },
      { enabled: true, protocol: "http/protobuf", serviceName: "greyfleet-serve" },
    ],
    [
      "a traces endpoint, JSON, a service name",
      {
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c:4318/v1/traces",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_SERVICE_NAME: "mx1-shim",
      },
      { enabled: true, protocol: "http/json", serviceName: "mx1-shim" },
    ],
    [
      "OTEL_TRACES_EXPORTER=otlp alone",
      { OTEL_TRACES_EXPORTER: "otlp" },
      { enabled: true, protocol: "http/protobuf", serviceName: "greyfleet-serve" },
    ],
    [
      "OTEL_TRACES_EXPORTER=none wins over an endpoint",
      { OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c" },
      { enabled: false },
    ],
    ["OTEL_SDK_DISABLED=true wins", { OTEL_SDK_DISABLED: "true", OTEL_TRACES_EXPORTER: "otlp" }, { enabled: false }],
    [
      "an unsupported exporter is a start-up problem",
      { OTEL_TRACES_EXPORTER: "console" },
      { problems: ['OTEL_TRACES_EXPORTER: "console" is not supported (otlp or none)'] },
    ],
    [
      "gRPC OTLP is a start-up problem",
      { OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "grpc" },
      { problems: ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "grpc" is not supported (http/protobuf or http/json)'] },
    ],
  ];
  for (const [name, env, expected] of cases) {
    it(name, () => assert.deepEqual(tracingSettings(env, "serve"), expected));
  }

  it("refuses to start with a setting it cannot honour, naming it", async () => {
    const { code, stderr } = await runGreyfleet(["serve", "--store", "memory:", "--listen", "127.0.0.1:0"], {
      env: { OTEL_TRACES_EXPORTER: "zipkin" },
    });
    assert.equal(code, 2);
    assert.match(stderr, /greyfleet serve: OTEL_TRACES_EXPORTER: "zipkin" is not supported/);
  });
});

describe("tracing in one process (in-memory exporter)", () => {
  const exporter = new InMemorySpanExporter();
  let tracing: Tracing;
  let service: DecisionService;
  let decider: GrpcDecider;

  before(async () => {
    tracing = startTracing({
      settings: { enabled: true, protocol: "http/json", serviceName: "test" },
      log: quiet,
      exporter,
    });
    const config = loadConfig("serve", {
      argv: ["--store", "memory:", "--listen", "127.0.0.1:0", "--metrics-listen", ""],
      env: {},
    });
    if (isConfigProblem(config)) throw new Error(config.problems.join("\n"));
    service = await startDecisionService(config, createDecisionMetrics(createRegistry("serve")), quiet);
    decider = new GrpcDecider(service.address, 1_000);
  });
  after(async () => {
    decider?.close();
    for (const part of service?.stoppables ?? []) await part.stop(1_000);
    await tracing?.shutdown(1_000);
  });

  /** The finished spans of the trace `root` started, by name. */
  const traceOf = (root: ReadableSpan | undefined): Map<string, ReadableSpan> => {
    assert.ok(root, "no root span");
    const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === root.spanContext().traceId);
    return new Map(spans.map((s) => [s.name, s]));
  };
  const parentOf = (span: ReadableSpan | undefined) => span?.parentSpanContext?.spanId;

  it("links shim > decision client > service > store in one trace, with bounded attributes", async () => {
    exporter.reset();
    const decisions = shimDecisions(decider);
    const span = startShimSpan("policy", "rcpt");
    const response = await decisions.decide(rcpt({ recipient: "bob+shape@example.com" }), span);
    endShimSpan(span, "defer");
    assert.equal(response.reason, Reason.REASON_NEW_TRIPLET);
    const shim = exporter.getFinishedSpans().find((s) => s.name === SPAN_NAMES.policyRequest);
    const spans = await waitFor("the store span", () => {
      const found = traceOf(shim);
      return found.size === 4 ? found : undefined;
    });
    const client = spans.get(SPAN_NAMES.decisionCheck);
    const server = spans.get(SPAN_NAMES.serviceCheck);
    const store = spans.get(SPAN_NAMES.storeDecide);
    assert.equal(shim?.kind, SpanKind.SERVER);
    assert.equal(parentOf(shim), undefined);
    assert.equal(client?.kind, SpanKind.CLIENT);
    assert.equal(parentOf(client), shim?.spanContext().spanId);
    assert.equal(server?.kind, SpanKind.SERVER);
    assert.equal(parentOf(server), client?.spanContext().spanId);
    assert.equal(server?.parentSpanContext?.isRemote, true, "the service's parent came over the wire");
    assert.equal(store?.kind, SpanKind.CLIENT);
    assert.equal(parentOf(store), server?.spanContext().spanId);
    assert.deepEqual(shim?.attributes, {
      [ATTRIBUTES.shim]: "policy",
      [ATTRIBUTES.stage]: "rcpt",
      [ATTRIBUTES.reason]: "new_triplet",
      [ATTRIBUTES.action]: "defer",
    });
    assert.equal(server?.attributes[ATTRIBUTES.action], "defer");
    assert.equal(server?.attributes[ATTRIBUTES.reason], "new_triplet");
    assert.equal(server?.attributes[ATTRIBUTES.store], "memory");
    assert.equal(store?.attributes[ATTRIBUTES.dbSystem], "memory");
    assert.equal(store?.attributes[ATTRIBUTES.storeOutcome], "new_triplet");
    for (const s of spans.values()) assertNoPersonalData(s.attributes, s.name);
  });

  it("gives checks asked together on one stream message their own traces", async () => {
    exporter.reset();
    const decisions = shimDecisions(decider);
    const roots = Array.from({ length: 5 }, () => startShimSpan("policy", "rcpt"));
    await Promise.all(roots.map((span, i) => decisions.decide(rcpt({ recipient: `batch${i}@example.com` }), span)));
    for (const span of roots) endShimSpan(span, "defer");
    const finished = await waitFor("20 spans", () => {
      const all = exporter.getFinishedSpans();
      return all.length >= 20 ? all : undefined;
    });
    const traceIds = new Set(finished.map((s) => s.spanContext().traceId));
    assert.equal(traceIds.size, 5);
    for (const traceId of traceIds) {
      const names = finished.filter((s) => s.spanContext().traceId === traceId).map((s) => s.name);
      assert.deepEqual(
        names.sort(),
        [SPAN_NAMES.serviceCheck, SPAN_NAMES.decisionCheck, SPAN_NAMES.policyRequest, SPAN_NAMES.storeDecide].sort(),
      );
    }
  });

  it("records the failure mode on the shim span and the error on the client span", async () => {
    exporter.reset();
    const down = new GrpcDecider(`127.0.0.1:${await freePort()}`, 1_000);
    try {
      const span = startShimSpan("policy", "rcpt");
      const response = await shimDecisions(down).decide(rcpt(), span);
      endShimSpan(span, "dunno");
      assert.equal(response.action, Action.ACTION_ACCEPT);
    } finally {
      down.close();
    }
    const shim = exporter.getFinishedSpans().find((s) => s.name === SPAN_NAMES.policyRequest);
    const client = traceOf(shim).get(SPAN_NAMES.decisionCheck);
    assert.equal(shim?.attributes[ATTRIBUTES.failureMode], "open");
    assert.equal(shim?.attributes[ATTRIBUTES.failureCause], "unavailable");
    assert.equal(shim?.attributes[ATTRIBUTES.reason], "decision_service_unavailable");
    assert.equal(client?.status.code, 2); // SpanStatusCode.ERROR
    assert.equal(client?.attributes[ATTRIBUTES.errorType], "unavailable");
  });

  it("joins a unary Check to the caller's trace through the traceparent metadata", async () => {
    exporter.reset();
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const callerSpanId = "00f067aa0ba902b7";
    const client = new TestClient(service.address);
    try {
      const metadata = new Metadata();
      metadata.set("traceparent", `00-${traceId}-${callerSpanId}-01`);
      await new Promise<void>((resolve, reject) =>
        client.raw.check(rcpt({ recipient: "unary@example.com" }), metadata, (error) =>
          error ? reject(error) : resolve(),
        ),
      );
    } finally {
      client.close();
    }
    const server = await waitFor("the unary server span", () =>
      exporter.getFinishedSpans().find((s) => s.name === SPAN_NAMES.serviceCheck),
    );
    assert.equal(server.spanContext().traceId, traceId);
    assert.equal(server.parentSpanContext?.spanId, callerSpanId);
    assert.equal(server.attributes["rpc.method"], "greyfleet.v1.GreylistService/Check");
  });

  it("traces shim > store when the engine is in-process (greyfleet all)", async () => {
    exporter.reset();
    const { engine } = testEngine(new MemoryStore());
    const span = startShimSpan("milter", "data");
    await shimDecisions(engine).decide(rcpt({ recipient: "all@example.com" }), span);
    endShimSpan(span, "defer");
    const shim = exporter.getFinishedSpans().find((s) => s.name === SPAN_NAMES.milterCheck);
    const store = traceOf(shim).get(SPAN_NAMES.storeDecide);
    assert.equal(store?.parentSpanContext?.spanId, shim?.spanContext().spanId);
  });
});

/** An OTLP/HTTP JSON receiver: keeps every span posted to /v1/traces, with its service name. */
class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  posts = 0;

  private constructor(private readonly server: Server) {}

  static async start(): Promise<OtlpReceiver> {
    const server = createServer();
    const receiver = new OtlpReceiver(server);
    server.on("request", (request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        if (request.method === "POST" && request.url === "/v1/traces") {
          receiver.posts++;
          receiver.spans.push(...flatten(JSON.parse(Buffer.concat(chunks).toString("utf8")) as OtlpTraces));
        }
        response.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return receiver;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/** The parts of an OTLP JSON ExportTraceServiceRequest the test reads. */
interface OtlpTraces {
  resourceSpans: {
    resource: { attributes: OtlpAttribute[] };
    scopeSpans: {
      spans: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind: number;
        attributes: OtlpAttribute[];
      }[];
    }[];
  }[];
}
interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string | number; boolValue?: boolean };
}
interface ReceivedSpan {
  readonly service: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: number;
  readonly attributes: Record<string, string | number | boolean | undefined>;
}

function attributeMap(attributes: readonly OtlpAttribute[]): Record<string, string | number | boolean | undefined> {
  return Object.fromEntries(
    attributes.map(({ key, value }) => [key, value.stringValue ?? value.intValue ?? value.boolValue]),
  );
}

function flatten(body: OtlpTraces): ReceivedSpan[] {
  return body.resourceSpans.flatMap(({ resource, scopeSpans }) => {
    const service = String(attributeMap(resource.attributes)["service.name"]);
    return scopeSpans.flatMap(({ spans }) =>
      spans.map((span) => ({
        service,
        traceId: span.traceId,
        spanId: span.spanId,
        parentSpanId: span.parentSpanId ?? "",
        name: span.name,
        kind: span.kind,
        attributes: attributeMap(span.attributes),
      })),
    );
  });
}

/** OTLP's span kinds (1 internal, 2 server, 3 client). */
const OTLP_KIND = { server: 2, client: 3 } as const;

/** The environment without any OTEL_* variable of the test's own environment. */
function withoutOtel(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of Object.keys(process.env)) if (name.startsWith("OTEL_")) env[name] = undefined;
  return { ...env, ...extra };
}

describe("tracing across processes (OTLP/HTTP JSON)", () => {
  let redis: RedisServer;
  let receiver: OtlpReceiver;
  const started: GreyfleetProcess[] = [];
  const start = async (args: string[], env: NodeJS.ProcessEnv) => {
    const proc = await GreyfleetProcess.start(args, { env });
    started.push(proc);
    return proc;
  };
  const serve = (env: NodeJS.ProcessEnv, store = "memory:") =>
    start(
      ["serve", "--store", store, "--redis-key-prefix", uniquePrefix(), "--listen", "127.0.0.1:0"].concat([
        "--metrics-listen",
        "",
      ]),
      env,
    );
  const policy = (service: GreyfleetProcess, env: NodeJS.ProcessEnv) =>
    start(["policy", "--decision", service.grpcAddress, "--listen", "127.0.0.1:0", "--metrics-listen", ""], env);
  const ask = async (shim: GreyfleetProcess, attributes: Record<string, string> = {}) => {
    const client = await PolicyClient.open(shim.logged(/policy server listening/, "policy"));
    try {
      return await client.ask(attributes);
    } finally {
      client.close();
    }
  };

  before(async () => {
    redis = await RedisServer.start();
    receiver = await OtlpReceiver.start();
  });
  after(async () => {
    for (const proc of started) await proc.stop();
    await receiver?.close();
    await redis?.stop();
  });

  it("sends one trace per recipient: policy shim > decision client > service > Redis, flushed at SIGTERM", async () => {
    const otel = {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    };
    // The service exports only when it stops (its batch delay is a minute): SIGTERM must flush.
    const service = await serve(withoutOtel({ ...otel, OTEL_BSP_SCHEDULE_DELAY: "60000" }), redis.url);
    const shim = await policy(service, withoutOtel({ ...otel, OTEL_BSP_SCHEDULE_DELAY: "20" }));
    assert.equal(await ask(shim), "action=DEFER_IF_PERMIT Greylisted, please try again later");

    const shimSpans = await waitFor("the shim's two spans", () =>
      receiver.spans.filter((s) => s.service === "greyfleet-policy").length >= 2 ? receiver.spans : undefined,
    );
    assert.equal(shimSpans.filter((s) => s.service === "greyfleet-serve").length, 0);
    assert.equal(await service.stop("SIGTERM"), 0);
    const spans = await waitFor("the service's two spans", () =>
      receiver.spans.length >= 4 ? receiver.spans : undefined,
    );

    const byName = new Map(spans.map((s) => [s.name, s]));
    const root = byName.get(SPAN_NAMES.policyRequest);
    const client = byName.get(SPAN_NAMES.decisionCheck);
    const server = byName.get(SPAN_NAMES.serviceCheck);
    const store = byName.get(SPAN_NAMES.storeDecide);
    assert.equal(spans.length, 4, JSON.stringify(spans, null, 1));
    assert.equal(new Set(spans.map((s) => s.traceId)).size, 1, "one trace id");
    assert.deepEqual(
      [root, client, server, store].map((s) => [s?.service, s?.kind, s?.parentSpanId]),
      [
        ["greyfleet-policy", OTLP_KIND.server, ""],
        ["greyfleet-policy", OTLP_KIND.client, root?.spanId],
        ["greyfleet-serve", OTLP_KIND.server, client?.spanId],
        ["greyfleet-serve", OTLP_KIND.client, server?.spanId],
      ],
    );
    assert.deepEqual(root?.attributes, {
      [ATTRIBUTES.shim]: "policy",
      [ATTRIBUTES.stage]: "rcpt",
      [ATTRIBUTES.reason]: "new_triplet",
      [ATTRIBUTES.action]: "defer",
    });
    assert.equal(server?.attributes[ATTRIBUTES.store], "redis");
    assert.equal(server?.attributes[ATTRIBUTES.reason], "new_triplet");
    assert.equal(server?.attributes[ATTRIBUTES.action], "defer");
    assert.equal(store?.attributes[ATTRIBUTES.dbSystem], "redis");
    for (const span of spans) assertNoPersonalData(span.attributes, span.name);
    await shim.stop();
  });

  it("exports nothing without OTEL_* variables, with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none", async () => {
    const before = receiver.posts;
    const pointed = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" };
    const plainService = await serve(withoutOtel());
    const plainShim = await policy(plainService, withoutOtel());
    const disabledService = await serve(withoutOtel({ ...pointed, OTEL_SDK_DISABLED: "true" }));
    const noneShim = await policy(disabledService, withoutOtel({ ...pointed, OTEL_TRACES_EXPORTER: "none" }));
    for (const shim of [plainShim, noneShim]) {
      assert.equal(
        await ask(shim, { recipient: "off@example.com" }),
        "action=DEFER_IF_PERMIT Greylisted, please try again later",
      );
    }
    // A process that traces exports what it has when it stops: after the exits nothing can come.
    for (const proc of [plainShim, noneShim, plainService, disabledService]) {
      assert.equal(await proc.stop("SIGTERM"), 0);
      assert.ok(!proc.lines.some((line) => /tracing on/.test(line)), proc.lines.join("\n"));
    }
    assert.equal(receiver.posts, before);
  });
});
