/** Wires the decision service together: store, engine, gRPC server, health monitor. */
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import type { Server } from "@grpc/grpc-js";
import { parseDefaultWhitelist } from "../cli/import-formats";
import { describeError, SettingError } from "../shared/errors";
import type { Stoppable } from "../shared/lifecycle";
import type { Logger } from "../shared/logging";
import { type DecisionMetrics, initialiseDecisionMetrics } from "../shared/metrics";
import { projectFile } from "../shared/paths";
import type { Config } from "../shared/settings";
import { PRODUCT } from "../shared/version";
import { Admin } from "./admin";
import { type ListEntryValue, Lists, normaliseEntryValue } from "./domain/lists";
import { Engine } from "./engine";
import { startHealthMonitor } from "./health-monitor";
import { ListsCache } from "./lists-cache";
import { type ServerSecurity, startDecisionServer } from "./rpc/server";
import { startStateSampler } from "./state-sampler";
import { openStore } from "./store/open";

/** The shipped default whitelist, relative to the project's top directory. */
const DEFAULT_WHITELIST_FILE = "lists/default-whitelist.txt";

function engineGrouping(config: Config) {
  return { ipv4PrefixLength: config.ipv4PrefixLength, ipv6PrefixLength: config.ipv6PrefixLength };
}

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
    password: storePassword(config),
    tls: {
      ca: readSettingFile("store-tls-ca-file", config.storeTlsCaFile),
      cert: readSettingFile("store-tls-cert-file", config.storeTlsCertFile),
      key: readSettingFile("store-tls-key-file", config.storeTlsKeyFile),
    },
    onEvent: (event, detail) => storeLog.debug(`store ${event}`, { detail }),
    sqliteBusyTimeoutMs: config.storeTimeoutMs,
  });
  const policy = {
    delayMs: config.greylistDelaySeconds * 1000,
    retryWindowMs: config.retryWindowSeconds * 1000,
    maxAgeMs: config.maxAgeSeconds * 1000,
    autoWhitelistPasses: config.autoWhitelistPasses,
    autoWhitelistCountIntervalMs: config.autoWhitelistCountIntervalSeconds * 1000,
  };
  const listsLog = log.child("lists");
  const lists = new ListsCache(
    store,
    config.defaultWhitelist === "on" ? loadDefaultWhitelist() : [],
    (error) =>
      listsLog.warn("could not read the lists from the store: keeping the current ones", {
        error: describeError(error),
      }),
    (current) => {
      for (const { entry, problem } of current.invalid) {
        listsLog.warn("stored list entry ignored", { kind: entry.kind, value: entry.value, problem });
      }
    },
    // Every refresh: an entry that expires changes no version, but leaves the count in force.
    (current) => {
      for (const [kind, count] of Object.entries(current.sizes(Date.now()))) metrics.listEntries.set({ kind }, count);
    },
  );
  const engine = new Engine({
    store,
    policy,
    grouping: engineGrouping(config),
    lists,
    rules: {
      internalNetworks: internalNetworks(config.internalNetworks),
      recipientOptIn: config.recipientOptIn === "on",
      blacklistAction: config.blacklistAction,
      greytrapAction: config.greytrapAction,
    },
    mode: config.mode,
    greytrapBlockMs: config.greytrapBlockSeconds * 1000,
    outboundLearning: config.outboundLearning === "on",
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
  return { engine, store, lists, policy };
}

/** The contents of a file a setting names, or undefined when it names none. */
function readSettingFile(flag: string, path: string): string | undefined {
  if (path === "") return undefined;
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new Error(`--${flag} ${path}: ${describeError(error)}`);
  }
}

/** The store password: from --store-password-file, else GREYFLEET_STORE_PASSWORD / the YAML file. */
function storePassword(config: Config): string | undefined {
  const fromFile = readSettingFile("store-password-file", config.storePasswordFile);
  if (fromFile !== undefined) return fromFile.replace(/\r?\n$/, "");
  return config.storePassword || undefined;
}

/** TLS and admin credentials of the gRPC listener, from the settings. */
function serverSecurity(config: Config): ServerSecurity {
  const fromFile = readSettingFile("admin-token-file", config.adminTokenFile)?.trim();
  // An empty file would mean "no token": AdminService open to any loopback caller, silently.
  if (fromFile === "") throw new SettingError(`--admin-token-file ${config.adminTokenFile}: the file is empty`);
  const token = fromFile ?? config.adminToken;
  return {
    tls: { certFile: config.tlsCertFile, keyFile: config.tlsKeyFile, clientCaFile: config.tlsClientCaFile },
    tlsReloadMs: config.tlsReloadMs,
    admin: {
      token,
      clientNames: config.adminClientNames
        .split(",")
        .map((name) => name.trim())
        .filter((name) => name !== ""),
    },
  };
}

/** The shipped default whitelist as list entries (source "default"). */
function loadDefaultWhitelist(): ListEntryValue[] {
  const parsed = parseDefaultWhitelist(readFileSync(projectFile(DEFAULT_WHITELIST_FILE), "utf8"));
  if (parsed.problems.length > 0) {
    const first = parsed.problems[0];
    throw new Error(`${DEFAULT_WHITELIST_FILE} line ${first?.line}: ${first?.problem}`);
  }
  return parsed.entries.map((entry) => ({
    kind: entry.kind,
    value: entry.value,
    expiresAtMs: 0,
    comment: entry.comment,
    createdAtMs: 0,
    source: "default",
  }));
}

/** --internal-networks as a matcher (its entries are client_whitelist-kind). */
function internalNetworks(setting: string): Lists {
  const entries: ListEntryValue[] = [];
  for (const item of setting === "" ? [] : setting.split(",")) {
    const value = normaliseEntryValue("client_whitelist", item);
    if (typeof value !== "string") throw new SettingError(`--internal-networks "${item}": ${value.error}`);
    entries.push({ kind: "client_whitelist", value, expiresAtMs: 0, comment: "", createdAtMs: 0, source: "config" });
  }
  return new Lists(entries);
}

/** Starts the decision service: engine, gRPC listener, store health monitor. */
export async function startDecisionService(
  config: Config,
  metrics: DecisionMetrics,
  log: Logger,
): Promise<DecisionService> {
  const { engine, store, lists, policy } = createEngine(config, metrics, log);
  initialiseDecisionMetrics(metrics, store.kind, { mode: config.mode, failureMode: config.failureMode });
  try {
    await store.waitUntilReady(STARTUP_STORE_WAIT_MS);
  } catch (error) {
    log.warn("store not reachable at start: answering by the failure mode until it is", {
      failure_mode: config.failureMode,
      error: describeError(error),
    });
  }
  const adminService = new Admin({ engine, store, lists, policy, grouping: engineGrouping(config) });
  let grpc: Awaited<ReturnType<typeof startDecisionServer>>;
  try {
    grpc = await startDecisionServer(
      config.grpcListen,
      engine,
      adminService,
      serverSecurity(config),
      log.child("grpc"),
      {
        maxChecksInFlight: config.maxChecksInFlight,
        maxCheckStreams: config.maxCheckStreams,
        onStreams: (open) => metrics.checkStreamsOpen.set(open),
        onOverload: (limit) => metrics.overloadRefusals.inc({ limit }),
      },
    );
  } catch (error) {
    await store.close();
    throw error;
  }
  await lists.start(config.listsRefreshMs);
  const stopSampler = startStateSampler({
    store,
    intervalMs: config.stateSampleIntervalMs,
    autoWhitelistPasses: config.autoWhitelistPasses,
    metrics,
    log: log.child("sampler"),
  });
  const monitor = startHealthMonitor({
    store,
    intervalMs: config.healthIntervalMs,
    timeoutMs: config.storeTimeoutMs,
    onChange: (up) => grpc.setStoreHealth(up),
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
          grpc.setShuttingDown();
          return drain(grpc, graceMs);
        },
      },
      {
        name: "store",
        stop: () => {
          lists.stop();
          stopSampler();
          return store.close();
        },
      },
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
