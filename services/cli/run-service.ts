/** `greyfleet serve` and `greyfleet all`: the long-running processes. */
import type { Server } from "node:http";
import { startDecisionService } from "../decision/main";
import { isConfigProblem, loadConfig } from "../shared/config";
import { describeError } from "../shared/errors";
import { type Stoppable, stopOnSignals } from "../shared/lifecycle";
import { boundAddress } from "../shared/listen";
import { createLogger } from "../shared/logging";
import { createDecisionMetrics, createRegistry, serveMetrics } from "../shared/metrics";
import type { Command } from "../shared/settings";
import { PRODUCT_VERSION } from "../shared/version";

/**
 * Starts the command's servers and returns -1 (keep running) once they listen, or an exit code
 * if start-up failed. Configuration problems are printed one per line, naming the setting.
 */
export async function runService(command: Extract<Command, "serve" | "all">, argv: readonly string[]): Promise<number> {
  const config = loadConfig(command, { argv, env: process.env });
  if (isConfigProblem(config)) {
    for (const problem of config.problems) process.stderr.write(`greyfleet ${command}: ${problem}\n`);
    return 2;
  }
  const log = createLogger({ level: config.logLevel, format: config.logFormat });
  const registry = createRegistry(command);
  const metrics = createDecisionMetrics(registry);
  const stoppables: Stoppable[] = [];
  try {
    const service = await startDecisionService(config, metrics, log);
    stoppables.push(...service.stoppables);
    if (config.metricsListen !== "") {
      const server = await serveMetrics(registry, config.metricsListen, log.child("metrics"));
      stoppables.push({ name: "metrics", stop: () => closeHttp(server) });
      log.info("metrics listening", { metrics: boundAddress(server) });
    }
  } catch (error) {
    log.error("start-up failed", { error: describeError(error) });
    for (const part of stoppables.reverse()) await part.stop(0).catch(() => {});
    return 1;
  }
  log.info("greyfleet started", { command, version: PRODUCT_VERSION });
  stopOnSignals(stoppables, config.shutdownGraceMs, log);
  return -1;
}

function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
