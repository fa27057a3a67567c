/**
 * OpenTelemetry tracing of one recipient's decision: the shim's span, the decision client's,
 * the service's and the store's, one trace across processes. This file holds the span and
 * attribute names (the only ones greyfleet emits), the reading of the standard OTEL_* variables,
 * and helpers over @opentelemetry/api. Tracing is off by default: until tracing-init.ts hands a
 * tracer over, every helper returns at once without allocating anything. Attributes carry
 * bounded values only: never an address, a host name of a client or any other personal data.
 */
import {
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  type SpanOptions,
  SpanStatusCode,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { ATTR_ERROR_TYPE, ATTR_RPC_METHOD, ATTR_RPC_SYSTEM_NAME } from "@opentelemetry/semantic-conventions";
import { type Action, actionToJSON, type Reason, reasonToJSON } from "../contract/gen/greyfleet/v1/greylist";

/** A span, as the helpers below hand it around (undefined while tracing is off). */
export type { Span } from "@opentelemetry/api";

/** Span names; a trace is policy.request|milter.check > decision.check > Check > store.decide. */
export const SPAN_NAMES = {
  /** A shim's decision for one recipient of a Postfix policy request (kind SERVER, the root). */
  policyRequest: "greyfleet.policy.request",
  /** A shim's decision for one recipient at the milter's RCPT or DATA (kind SERVER, the root). */
  milterCheck: "greyfleet.milter.check",
  /** The shim's call to the decision service (kind CLIENT). */
  decisionCheck: "greyfleet.decision.check",
  /** The decision service answering one Check, streamed or unary (kind SERVER). */
  serviceCheck: "greyfleet.Check",
  /** The engine's one store call that decides a triplet (kind CLIENT). */
  storeDecide: "greyfleet.store.decide",
} as const;

/** Attribute keys; every value is from a small fixed set. */
export const ATTRIBUTES = {
  /** policy | milter */
  shim: "greyfleet.shim",
  /** rcpt | data */
  stage: "greyfleet.stage",
  /** Shim span: the reply's action word (defer, reject, prepend, dunno, accept, ...); service span: accept | defer | reject. */
  action: "greyfleet.action",
  /** The decision's reason (new_triplet, known_triplet, store_unavailable, ...). */
  reason: "greyfleet.reason",
  /** Set on a shim span when the shim's failure mode answered: open | tempfail. */
  failureMode: "greyfleet.failure_mode",
  /** Why the failure mode answered: deadline_exceeded, unavailable, invalid_request, internal. */
  failureCause: "greyfleet.failure_cause",
  /** The decision service's store: memory | sqlite | redis. */
  store: "greyfleet.store",
  /** Store span: what the store decided (new_triplet, too_early, passed_after_retry, ...). */
  storeOutcome: "greyfleet.store.outcome",
  /** Store span: the store kind (memory, sqlite, redis). */
  dbSystem: "db.system",
  rpcSystemName: ATTR_RPC_SYSTEM_NAME,
  rpcMethod: ATTR_RPC_METHOD,
  /** On a failed span: a greyfleet error code or timeout | error. */
  errorType: ATTR_ERROR_TYPE,
} as const;

/** The gRPC methods as rpc.method names them. */
export const RPC_METHODS = {
  check: "greyfleet.v1.GreylistService/Check",
  checkStream: "greyfleet.v1.GreylistService/CheckStream",
} as const;

/** A traceparent longer than this is ignored (version 00 is 55 characters; later ones may add fields). */
export const MAX_TRACEPARENT_CHARS = 128;
/** A tracestate (unary metadata only) longer than this is ignored (W3C: 32 members of up to 256 characters). */
const MAX_TRACESTATE_CHARS = 1024;

/** The instrumentation scope of every greyfleet span. */
export const TRACER_NAME = "greyfleet";

/** Whether and how to export traces, from the standard OTEL_* variables. */
export type TracingSettings =
  | { readonly enabled: false }
  | {
      readonly enabled: true;
      /** OTLP over HTTP, protobuf (the default) or JSON bodies. */
      readonly protocol: "http/protobuf" | "http/json";
      /** OTEL_SERVICE_NAME, or "greyfleet-<command>". */
      readonly serviceName: string;
    };

/**
 * Reads the OTEL_* variables that switch tracing on: OTEL_TRACES_EXPORTER=otlp, or, with it
 * unset, OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT. OTEL_SDK_DISABLED=true
 * and OTEL_TRACES_EXPORTER=none switch it off. Returns problems, one per setting, for values
 * greyfleet cannot honour. The exporter itself reads the endpoint, headers, timeout and
 * compression variables, the batch processor OTEL_BSP_*, the provider OTEL_TRACES_SAMPLER.
 */
export function tracingSettings(
  env: NodeJS.ProcessEnv,
  command: string,
): TracingSettings | { readonly problems: readonly string[] } {
  const value = (name: string): string => (env[name] ?? "").trim();
  if (value("OTEL_SDK_DISABLED").toLowerCase() === "true") return { enabled: false };
  const problems: string[] = [];
  const exporters = value("OTEL_TRACES_EXPORTER")
    .toLowerCase()
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "");
  const unknown = exporters.filter((name) => name !== "otlp" && name !== "none");
  if (unknown.length > 0) {
    problems.push(`OTEL_TRACES_EXPORTER: "${unknown.join(",")}" is not supported (otlp or none)`);
  }
  const enabled =
    exporters.length > 0
      ? exporters.includes("otlp")
      : value("OTEL_EXPORTER_OTLP_ENDPOINT") !== "" || value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") !== "";
  const protocolVariable = value("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
    ? "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    : "OTEL_EXPORTER_OTLP_PROTOCOL";
  const protocol = value(protocolVariable) || "http/protobuf";
  if (enabled && protocol !== "http/protobuf" && protocol !== "http/json") {
    problems.push(`${protocolVariable}: "${protocol}" is not supported (http/protobuf or http/json)`);
  }
  if (problems.length > 0) return { problems };
  if (!enabled) return { enabled: false };
  return {
    enabled: true,
    protocol: protocol === "http/json" ? "http/json" : "http/protobuf",
    serviceName: value("OTEL_SERVICE_NAME") || `greyfleet-${command}`,
  };
}

/**
 * Span options shared by every span of a kind. Attributes are set after the sampler has decided,
 * and only on a recording span: an unsampled recipient allocates no attribute object.
 */
const SERVER_SPAN: SpanOptions = Object.freeze({ kind: SpanKind.SERVER });
const CLIENT_SPAN: SpanOptions = Object.freeze({ kind: SpanKind.CLIENT });

/** The tracer while tracing is on; undefined (the default) makes every helper a no-op. */
let tracer: Tracer | undefined;

/** Called by tracing-init.ts: spans are made by `active`, or by nobody when undefined. */
export function useTracer(active: Tracer | undefined): void {
  tracer = active;
}

/** Whether spans are being made. */
export function tracingEnabled(): boolean {
  return tracer !== undefined;
}

/** Starts a shim's span for one recipient (a new trace), or returns undefined while tracing is off. */
export function startShimSpan(shim: "policy" | "milter", stage: "rcpt" | "data"): Span | undefined {
  if (!tracer) return undefined;
  const span = tracer.startSpan(
    shim === "policy" ? SPAN_NAMES.policyRequest : SPAN_NAMES.milterCheck,
    SERVER_SPAN,
    ROOT_CONTEXT,
  );
  if (span.isRecording()) {
    span.setAttribute(ATTRIBUTES.shim, shim);
    span.setAttribute(ATTRIBUTES.stage, stage);
  }
  return span;
}

/**
 * Runs `fn` with `span` active: spans that `fn` starts before its first await are its children
 * (the context manager is synchronous, see tracing-init.ts).
 */
export function inSpan<T>(span: Span | undefined, fn: () => T): T {
  return span ? context.with(trace.setSpan(context.active(), span), fn) : fn();
}

/** Records on a shim span the decision it got, or that its failure mode answered (and why). */
export function noteShimDecision(
  span: Span | undefined,
  reason: Reason,
  failure?: { readonly mode: "open" | "tempfail"; readonly cause: string },
): void {
  if (!span?.isRecording()) return;
  span.setAttribute(ATTRIBUTES.reason, reasonName(reason));
  if (failure) {
    span.setAttribute(ATTRIBUTES.failureMode, failure.mode);
    span.setAttribute(ATTRIBUTES.failureCause, failure.cause);
  }
}

/** Ends a shim span with the action word of the reply sent to the MTA. */
export function endShimSpan(span: Span | undefined, action: string): void {
  if (!span) return;
  if (span.isRecording()) span.setAttribute(ATTRIBUTES.action, action);
  span.end();
}

/** Starts the decision client's span, a child of the active span; undefined while tracing is off. */
export function startClientSpan(): Span | undefined {
  if (!tracer) return undefined;
  const span = tracer.startSpan(SPAN_NAMES.decisionCheck, CLIENT_SPAN, context.active());
  if (span.isRecording()) {
    span.setAttribute(ATTRIBUTES.rpcSystemName, "grpc");
    span.setAttribute(ATTRIBUTES.rpcMethod, RPC_METHODS.checkStream);
  }
  return span;
}

/** The W3C traceparent that makes the service's span a child of `span`; "" without a span. */
export function traceparentOf(span: Span | undefined): string {
  if (!span) return "";
  const carrier: { traceparent?: string } = {};
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), carrier);
  return carrier.traceparent ?? "";
}

/**
 * Starts the service's span for one Check, a child of the caller's span named by `traceparent`
 * (from the StreamedCheck, or the unary call's metadata; `tracestate` only there), else the root
 * of a new trace; undefined while tracing is off.
 */
export function startServiceSpan(
  method: "check" | "checkStream",
  traceparent: string | undefined,
  tracestate?: string,
): Span | undefined {
  if (!tracer) return undefined;
  const span = tracer.startSpan(SPAN_NAMES.serviceCheck, SERVER_SPAN, callerContext(traceparent, tracestate));
  if (span.isRecording()) {
    span.setAttribute(ATTRIBUTES.rpcSystemName, "grpc");
    span.setAttribute(ATTRIBUTES.rpcMethod, RPC_METHODS[method]);
  }
  return span;
}

/** The context of a remote caller's span, or the root context if there is none or it is malformed. */
function callerContext(traceparent: string | undefined, tracestate: string | undefined): Context {
  if (!traceparent || traceparent.length > MAX_TRACEPARENT_CHARS) return ROOT_CONTEXT;
  const carrier: Record<string, string> = { traceparent };
  if (tracestate && tracestate.length <= MAX_TRACESTATE_CHARS) carrier.tracestate = tracestate;
  return propagation.extract(ROOT_CONTEXT, carrier);
}

/** Ends the service's span with the decision (and the store it was made on). */
export function endServiceSpan(
  span: Span | undefined,
  response: { readonly action: Action; readonly reason: Reason },
  store: string | undefined,
): void {
  if (!span) return;
  if (span.isRecording()) {
    span.setAttribute(ATTRIBUTES.action, actionName(response.action));
    span.setAttribute(ATTRIBUTES.reason, reasonName(response.reason));
    if (store) span.setAttribute(ATTRIBUTES.store, store);
  }
  span.end();
}

/** Starts the store span of one decision, a child of the active span; undefined while tracing is off. */
export function startStoreSpan(store: string): Span | undefined {
  if (!tracer) return undefined;
  const span = tracer.startSpan(SPAN_NAMES.storeDecide, CLIENT_SPAN, context.active());
  if (span.isRecording()) span.setAttribute(ATTRIBUTES.dbSystem, store);
  return span;
}

/** Ends a store span with what the store decided. */
export function endStoreSpan(span: Span | undefined, outcome: string): void {
  if (!span) return;
  if (span.isRecording()) span.setAttribute(ATTRIBUTES.storeOutcome, outcome);
  span.end();
}

/**
 * Ends any greyfleet span as failed with `errorType`, a bounded code (never an error message: a
 * message may quote the request).
 */
export function failSpan(span: Span | undefined, errorType: string): void {
  if (!span) return;
  if (span.isRecording()) {
    span.setAttribute(ATTRIBUTES.errorType, errorType);
    span.setStatus({ code: SpanStatusCode.ERROR, message: errorType });
  }
  span.end();
}

/** "ACTION_DEFER" -> "defer". */
function actionName(action: Action): string {
  return actionToJSON(action).replace("ACTION_", "").toLowerCase();
}

/** "REASON_NEW_TRIPLET" -> "new_triplet". */
function reasonName(reason: Reason): string {
  return reasonToJSON(reason).replace("REASON_", "").toLowerCase();
}
