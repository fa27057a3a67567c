/** Wires the decision service together: store, engine, gRPC server, health monitor. */
import { hostname } from "node:os";
import type { Server } from "@grpc/grpc-js";
import { describeError } from "../shared/errors";
import type { Stoppable } from "../shared/lifecycle";
import type { Logger } from "../shared/logging";
import type { DecisionMetrics } from "../shared/metrics";
import type { Config } from "../shared/settings";
import { PRODUCT } from "../shared/version";
import { Engine } from "./engine";
import { startHealthMonitor } from "./health-monitor";
import { startDecisionServer } from "./rpc/server";
import { openStore } from "./store/open";

/** How long start-up waits for the store before serving by the failure mode. */
const STARTUP_STORE_WAIT_MS = 3_000;

/** A running decision service. */
export interface DecisionService {
  readonly engine: Engine;
  /** The bound gRPC address. */
  readonly address: string;
  /** Stop order: health to NOT_SERVING and gRPC drain, then the store. */
  readonly stoppables: readonly Stoppable[];
}

/** Builds the engine on the configured store (no network listener). */
export function createEngine(config: Config, metrics: DecisionMetrics, log: Logger) {
  const storeLog = log.child("store");
  const store = openStore(config.store, {
    dataDir: config.dataDir,
    redisKeyPrefix: config.redisKeyPrefix,
    onEvent: (event, detail) => storeLog.debug(`store ${event}`, { detail }),
  });
  const engine = new Engine({
    store,
    policy: {
      delayMs: config.greylistDelaySeconds * 1000,
      retryWindowMs: config.retryWindowSeconds * 1000,
      maxAgeMs: config.maxAgeSeconds * 1000,
      autoWhitelistPasses: config.autoWhitelistPasses,
      autoWhitelistCountIntervalMs: config.autoWhitelistCountIntervalSeconds * 1000,
    },
    grouping: { ipv4PrefixLength: config.ipv4PrefixLength, ipv6PrefixLength: config.ipv6PrefixLength },
    failureMode: config.failureMode,
    storeTimeoutMs: config.storeTimeoutMs,
    deferReply: {
      code: config.deferSmtpCode,
      enhancedStatusCode: config.deferEnhancedStatusCode,
      text: config.deferText,
    },
    product: PRODUCT,
    hostname: config.headerHostname || hostname(),
    failureLogIntervalMs: config.failureLogIntervalSeconds * 1000,
    metrics,
    log: log.child("engine"),
  });
  return { engine, store };
}

/** Starts the decision service: engine, gRPC listener, store health monitor. */
export async function startDecisionService(
  config: Config,
  metrics: DecisionMetrics,
  log: Logger,
): Promise<DecisionService> {
  const { engine, store } = createEngine(config, metrics, log);
  try {
    await store.waitUntilReady(STARTUP_STORE_WAIT_MS);
  } catch (error) {
    log.warn("store not reachable at start: answering by the failure mode until it is", {
      failure_mode: config.failureMode,
      error: describeError(error),
    });
  }
  let grpc: Awaited<ReturnType<typeof startDecisionServer>>;
  try {
    grpc = await startDecisionServer(config.grpcListen, engine, log.child("grpc"));
  } catch (error) {
    await store.close();
    throw error;
  }
  const monitor = startHealthMonitor({
    store,
    intervalMs: config.healthIntervalMs,
    timeoutMs: config.storeTimeoutMs,
    onChange: (up) => grpc.setServing(up),
    metrics,
    log: log.child("health"),
  });
  await monitor.probe();
  log.info("decision service listening", { grpc: grpc.address, store: store.kind });
  return {
    engine,
    address: grpc.address,
    stoppables: [
      {
        name: "grpc",
        stop: (graceMs) => {
          monitor.stop();
          grpc.setServing(false);
          return drain(grpc, graceMs);
        },
      },
      { name: "store", stop: () => store.close() },
    ],
  };
}

/**
 * Lets in-flight calls finish (refusing new ones) and ends open streams once they are answered;
 * forces the rest after `graceMs`.
 */
function drain(grpc: { server: Server; drainStreams(): Promise<void> }, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => grpc.server.forceShutdown(), graceMs);
    grpc.server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
    void grpc.drainStreams();
  });
}
