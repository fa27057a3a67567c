/** Prometheus metrics: one registry per process and its /metrics HTTP endpoint. */
import { createServer, type Server } from "node:http";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { describeError } from "./errors";
import { listenHttp } from "./listen";
import type { Logger } from "./logging";
import * as names from "./metric-names";
import { PRODUCT_VERSION } from "./version";

/** The decision service's metrics. */
export interface DecisionMetrics {
  readonly decisions: Counter<"action" | "reason">;
  readonly decisionDuration: Histogram;
  readonly storeDuration: Histogram<"store" | "operation">;
  readonly storeErrors: Counter<"store" | "operation" | "kind">;
  readonly storeUp: Gauge<"store">;
  readonly failureModeActivations: Counter<"mode">;
  readonly invalidRequests: Counter<"field">;
  readonly listHits: Counter<"kind">;
  readonly listEntries: Gauge<"kind">;
  readonly triplets: Gauge<"state">;
  readonly autoWhitelistedClients: Gauge;
  readonly greytrappedNetworks: Gauge;
  readonly outboundPairs: Gauge;
  readonly checkStreamsOpen: Gauge;
  readonly overloadRefusals: Counter;
  readonly configInfo: Gauge<"mode" | "failure_mode">;
}

/** A registry with build info and the default Node.js process metrics. */
export function createRegistry(command: string): Registry {
  const registry = new Registry();
  new Gauge({
    name: names.BUILD_INFO,
    help: "greyfleet build information; always 1.",
    labelNames: ["version", "command"],
    registers: [registry],
  }).set({ version: PRODUCT_VERSION, command }, 1);
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** Registers the decision service's metrics in `registry`. */
export function createDecisionMetrics(registry: Registry): DecisionMetrics {
  const registers = [registry];
  return {
    decisions: new Counter({
      name: names.DECISIONS_TOTAL,
      help: "Greylisting decisions by action and reason.",
      labelNames: ["action", "reason"],
      registers,
    }),
    decisionDuration: new Histogram({
      name: names.DECISION_DURATION_SECONDS,
      help: "Time to decide one Check, store call included, in seconds.",
      buckets: [...names.LATENCY_BUCKETS_SECONDS],
      registers,
    }),
    storeDuration: new Histogram({
      name: names.STORE_OPERATION_DURATION_SECONDS,
      help: "Store operation latency in seconds.",
      labelNames: ["store", "operation"],
      buckets: [...names.LATENCY_BUCKETS_SECONDS],
      registers,
    }),
    storeErrors: new Counter({
      name: names.STORE_ERRORS_TOTAL,
      help: "Store operations that failed (kind=error) or exceeded the store timeout (kind=timeout).",
      labelNames: ["store", "operation", "kind"],
      registers,
    }),
    storeUp: new Gauge({
      name: names.STORE_UP,
      help: "1 while the store answers health probes, else 0.",
      labelNames: ["store"],
      registers,
    }),
    failureModeActivations: new Counter({
      name: names.FAILURE_MODE_ACTIVATIONS_TOTAL,
      help: "Decisions made by the failure mode because the store was unavailable.",
      labelNames: ["mode"],
      registers,
    }),
    checkStreamsOpen: new Gauge({
      name: names.CHECK_STREAMS_OPEN,
      help: "CheckStreams open now (one per shim process and replica).",
      registers,
    }),
    overloadRefusals: new Counter({
      name: names.OVERLOAD_REFUSALS_TOTAL,
      help: "Checks (limit=checks_in_flight) and CheckStreams (limit=check_streams) refused with RESOURCE_EXHAUSTED.",
      labelNames: ["limit"],
      registers,
    }),
    invalidRequests: new Counter({
      name: names.INVALID_REQUESTS_TOTAL,
      help: "Check calls refused with INVALID_ARGUMENT, by offending field.",
      labelNames: ["field"],
      registers,
    }),
    listHits: new Counter({
      name: names.LIST_HITS_TOTAL,
      help: "Decisions settled by a list (whitelists, blacklist, greytraps), by list kind.",
      labelNames: ["kind"],
      registers,
    }),
    listEntries: new Gauge({
      name: names.LIST_ENTRIES,
      help: "List entries in force, by list kind.",
      labelNames: ["kind"],
      registers,
    }),
    triplets: new Gauge({
      name: names.TRIPLETS,
      help: "Triplets in the store by state (pending, passed); sampled, estimated on Redis.",
      labelNames: ["state"],
      registers,
    }),
    autoWhitelistedClients: new Gauge({
      name: names.AUTO_WHITELISTED_CLIENTS,
      help: "Client networks auto-whitelisted; sampled, estimated on Redis.",
      registers,
    }),
    greytrappedNetworks: new Gauge({
      name: names.GREYTRAPPED_NETWORKS,
      help: "Client networks blocked by a greytrap; sampled, estimated on Redis.",
      registers,
    }),
    outboundPairs: new Gauge({
      name: names.OUTBOUND_PAIRS,
      help: "Outbound pairs remembered; sampled, estimated on Redis.",
      registers,
    }),
    configInfo: new Gauge({
      name: names.CONFIG_INFO,
      help: "How the service is set to decide; always 1.",
      labelNames: ["mode", "failure_mode"],
      registers,
    }),
  };
}

/**
 * Sets the label sets a dashboard or alert needs from the start to 0, so the first event is an
 * increase that rate() and increase() see (a counter born at 1 shows no increase).
 */
export function initialiseDecisionMetrics(
  metrics: DecisionMetrics,
  store: string,
  settings: { mode: string; failureMode: string },
): void {
  metrics.configInfo.set({ mode: settings.mode, failure_mode: settings.failureMode }, 1);
  metrics.failureModeActivations.inc({ mode: settings.failureMode }, 0);
  for (const operation of ["decide", "block_network", "learn_outbound"]) {
    for (const kind of ["error", "timeout"]) metrics.storeErrors.inc({ store, operation, kind }, 0);
  }
  metrics.storeUp.set({ store }, 0);
  for (const limit of ["checks_in_flight", "check_streams"]) metrics.overloadRefusals.inc({ limit }, 0);
}

/** Serves GET /metrics (Prometheus text format) and GET /healthz on `hostPort`. */
export async function serveMetrics(registry: Registry, hostPort: string, log: Logger): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.method === "GET" && request.url === "/metrics") {
      registry.metrics().then(
        (body) => {
          response.writeHead(200, { "content-type": registry.contentType });
          response.end(body);
        },
        (error: unknown) => {
          log.error("metrics collection failed", { error: describeError(error) });
          response.writeHead(500).end();
        },
      );
    } else if (request.method === "GET" && request.url === "/healthz") {
      response.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found: try /metrics\n");
    }
  });
  await listenHttp(server, hostPort, (error) =>
    log.warn("metrics server: accepting a connection failed", { error: describeError(error) }),
  );
  return server;
}
