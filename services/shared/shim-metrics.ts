/**
 * Metrics every shim exports: MTA connections, requests by stage and action, protocol errors,
 * decision-call latency and failure-mode activations. One metric per name with a `shim` label
 * (policy or milter), so one dashboard panel covers both.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import * as names from "./metric-names";

/** A shim's metrics, with its `shim` label bound. */
export interface ShimMetrics {
  connectionOpened(): void;
  connectionClosed(): void;
  /** One request (policy) or recipient (milter) answered at `stage` with `action`. */
  answered(stage: string, action: string): void;
  /** A protocol error from the MTA that closed its connection. */
  protocolError(code: string): void;
  /** Seconds one decision took. */
  decisionCall(seconds: number): void;
  /** The failure mode decided, because of `cause`. */
  failureMode(mode: string, cause: string): void;
}

interface Registered {
  readonly connections: Counter<"shim">;
  readonly open: Gauge<"shim">;
  readonly requests: Counter<"shim" | "stage" | "action">;
  readonly protocolErrors: Counter<"shim" | "code">;
  readonly decisionCalls: Histogram<"shim">;
  readonly failureModes: Counter<"shim" | "mode" | "cause">;
}

const perRegistry = new WeakMap<Registry, Registered>();

function register(registry: Registry): Registered {
  const registers = [registry];
  return {
    connections: new Counter({
      name: names.SHIM_CONNECTIONS_TOTAL,
      help: "Connections accepted from the MTA (milter: one per SMTP session).",
      labelNames: ["shim"],
      registers,
    }),
    open: new Gauge({
      name: names.SHIM_OPEN_CONNECTIONS,
      help: "Connections from the MTA open now.",
      labelNames: ["shim"],
      registers,
    }),
    requests: new Counter({
      name: names.SHIM_REQUESTS_TOTAL,
      help: "Requests (policy) or recipients (milter) answered, by SMTP stage and action.",
      labelNames: ["shim", "stage", "action"],
      registers,
    }),
    protocolErrors: new Counter({
      name: names.SHIM_PROTOCOL_ERRORS_TOTAL,
      help: "Protocol errors from the MTA that closed its connection, by error code.",
      labelNames: ["shim", "code"],
      registers,
    }),
    decisionCalls: new Histogram({
      name: names.SHIM_DECISION_CALL_DURATION_SECONDS,
      help: "Time for a shim to get a decision (gRPC or in-process), in seconds.",
      labelNames: ["shim"],
      buckets: [...names.LATENCY_BUCKETS_SECONDS],
      registers,
    }),
    failureModes: new Counter({
      name: names.SHIM_FAILURE_MODE_ACTIVATIONS_TOTAL,
      help: "Decisions made by a shim's failure mode because no decision came, by mode and cause.",
      labelNames: ["shim", "mode", "cause"],
      registers,
    }),
  };
}

/** The metrics of `shim` in `registry` (both shims may share one registry). */
export function createShimMetrics(registry: Registry, shim: "policy" | "milter"): ShimMetrics {
  let metrics = perRegistry.get(registry);
  if (!metrics) {
    metrics = register(registry);
    perRegistry.set(registry, metrics);
  }
  const m = metrics;
  const connections = m.connections.labels(shim);
  const open = m.open.labels(shim);
  const decisionCalls = m.decisionCalls.labels(shim);
  open.set(0);
  return {
    connectionOpened: () => {
      connections.inc();
      open.inc();
    },
    connectionClosed: () => open.dec(),
    answered: (stage, action) => m.requests.inc({ shim, stage, action }),
    protocolError: (code) => m.protocolErrors.inc({ shim, code }),
    decisionCall: (seconds) => decisionCalls.observe(seconds),
    failureMode: (mode, cause) => m.failureModes.inc({ shim, mode, cause }),
  };
}
