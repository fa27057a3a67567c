/** The long-running commands: `greyfleet serve`, `policy`, `milter` and `all`. */
import type { Server } from "node:http";
import { hostname } from "node:os";
import type { Registry } from "prom-client";
import { startDecisionService } from "../decision/main";
import { startMilterServer } from "../milter/server";
import { startPolicyServer } from "../policy/server";
import { BalancedDecider } from "../shared/balanced-decider";
import { isConfigProblem, loadConfig } from "../shared/config";
import type { Decider } from "../shared/decider";
import { GrpcDecider } from "../shared/decision-client";
import { describeError, SettingError } from "../shared/errors";
import { type Stoppable, stopOnSignals } from "../shared/lifecycle";
import { boundAddress } from "../shared/listen";
import { createLogger, type Logger } from "../shared/logging";
import { createDecisionMetrics, createRegistry, serveMetrics } from "../shared/metrics";
import { type Command, type Config, parseDecisionTargets } from "../shared/settings";
import { ShimDecisions } from "../shared/shim-decision";
import { createShimMetrics } from "../shared/shim-metrics";
import { channelCredentials, channelOptions } from "../shared/tls";
import { type TracingSettings, tracingSettings } from "../shared/tracing";
import { PRODUCT_VERSION } from "../shared/version";

/** `--listen` is the shim's own listener for `greyfleet policy` and `greyfleet milter`. */
const FLAG_ALIASES: Readonly<Record<Command, Readonly<Record<string, string>>>> = {
  serve: {},
  all: {},
  policy: { listen: "policy-listen" },
  milter: { listen: "milter-listen" },
};

/**
 * Starts the command's servers and returns -1 (keep running) once they listen, or an exit code
 * if start-up failed. Configuration problems are printed one per line, naming the setting.
 */
export async function runService(command: Command, argv: readonly string[]): Promise<number> {
  const config = loadConfig(command, { argv, env: process.env }, FLAG_ALIASES[command]);
  const tracing = tracingSettings(process.env, command);
  const problems = [
    ...(isConfigProblem(config) ? config.problems : []),
    ...("problems" in tracing ? tracing.problems : []),
  ];
  if (isConfigProblem(config) || "problems" in tracing) {
    for (const problem of problems) process.stderr.write(`greyfleet ${command}: ${problem}\n`);
    return 2;
  }
  const log = createLogger({ level: config.logLevel, format: config.logFormat });
  const registry = createRegistry(command);
  const stoppables: Stoppable[] = [];
  const tracingPart = tracing.enabled ? await startTracingPart(tracing, log) : undefined;
  try {
    await startParts(command, config, registry, log, stoppables);
  } catch (error) {
    log.error("start-up failed", { error: describeError(error) });
    for (const part of [...stoppables].reverse()) await part.stop(0).catch(() => {});
    await tracingPart?.stop(0).catch(() => {});
    return error instanceof SettingError ? 2 : 1;
  }
  // Tracing stops last, after everything that makes spans, exporting what is still queued.
  if (tracingPart) stoppables.push(tracingPart);
  log.info("greyfleet started", { command, version: PRODUCT_VERSION });
  stopOnSignals(stoppables, config.shutdownGraceMs, log);
  return -1;
}

/** Starts OpenTelemetry tracing, loading the SDK only now that the OTEL_* variables ask for it. */
async function startTracingPart(
  settings: Extract<TracingSettings, { enabled: true }>,
  log: Logger,
): Promise<Stoppable> {
  const { startTracing } = await import("../shared/tracing-init.js");
  const running = startTracing({ settings, log: log.child("tracing") });
  return { name: "tracing", stop: (graceMs) => running.shutdown(graceMs) };
}

/** Starts each part of the command, appending it to `stoppables` in stop order. */
async function startParts(
  command: Command,
  config: Config,
  registry: Registry,
  log: Logger,
  stoppables: Stoppable[],
): Promise<void> {
  // Shims stop first (finish their MTA's requests), then the service, then the store.
  const shims: Stoppable[] = [];
  const rest: Stoppable[] = [];
  let decider: Decider | undefined;
  if (command === "serve" || command === "all") {
    const service = await startDecisionService(config, createDecisionMetrics(registry), log);
    rest.push(...service.stoppables);
    decider = service.engine;
  } else {
    decider = await connectDecision(config, log.child("decision"), rest);
  }
  const mtaId = config.mtaId || hostname();
  const shim = (name: "policy" | "milter") => {
    const metrics = createShimMetrics(registry, name);
    const decisions = new ShimDecisions(decider as Decider, {
      shim: name,
      timeoutMs: config.decisionTimeoutMs,
      failureMode: config.failureMode,
      failureLogIntervalMs: config.failureLogIntervalSeconds * 1000,
      metrics,
      log: log.child(name),
    });
    return { metrics, decisions, mtaId, log: log.child(name) };
  };
  try {
    if ((command === "policy" || command === "all") && config.policyListen !== "") {
      const listener = await startPolicyServer({
        ...shim("policy"),
        listen: config.policyListen,
        deferReply: config.policyDeferReply,
        idleTimeoutMs: config.policyIdleTimeoutMs,
      });
      shims.push({ name: "policy", stop: (graceMs) => listener.stop(graceMs) });
      log.info("policy server listening", { policy: listener.address });
    }
    if ((command === "milter" || command === "all") && config.milterListen !== "") {
      const listener = await startMilterServer({
        ...shim("milter"),
        listen: config.milterListen,
        idleTimeoutMs: config.milterIdleTimeoutMs,
      });
      shims.push({ name: "milter", stop: (graceMs) => listener.stop(graceMs) });
      log.info("milter server listening", { milter: listener.address });
    }
    if (config.metricsListen !== "") {
      const server = await serveMetrics(registry, config.metricsListen, log.child("metrics"));
      rest.push({ name: "metrics", stop: () => closeHttp(server) });
      log.info("metrics listening", { metrics: boundAddress(server) });
    }
  } finally {
    stoppables.push(...shims, ...rest);
  }
}

function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

/** Re-resolution interval of --decision dns:NAME:PORT. */
const DECISION_RESOLVE_MS = 10_000;

/**
 * The shims' Decider: one GrpcDecider per decision replica named by --decision, balanced.
 * With dns:NAME the replicas are IP addresses, so TLS verifies NAME unless
 * --decision-tls-server-name says otherwise.
 */
async function connectDecision(config: Config, log: Logger, rest: Stoppable[]): Promise<Decider> {
  const targets = parseDecisionTargets(config.decisionAddress);
  if ("error" in targets) throw new SettingError(`--decision: ${targets.error}`);
  const tls = {
    caFile: config.decisionTlsCaFile,
    certFile: config.decisionTlsCertFile,
    keyFile: config.decisionTlsKeyFile,
    serverName: config.decisionTlsServerName || (targets.kind === "dns" ? targets.host : ""),
  };
  const credentials = channelCredentials(tls, config.tlsReloadMs, "decision-");
  const balanced = new BalancedDecider(targets, {
    connect: (address) =>
      new GrpcDecider(address, config.decisionTimeoutMs, { credentials, options: channelOptions(tls) }),
    onChange: (addresses) => log.info("decision replicas", { replicas: addresses.join(",") }),
  });
  rest.push({ name: "decision client", stop: async () => balanced.close() });
  await balanced.start(DECISION_RESOLVE_MS);
  return balanced;
}
