/**
 * Connects to the Redis a store URL names: one server, a Sentinel-monitored master, or a Redis
 * Cluster, with TLS and credentials. Every topology gets the same failure behaviour: commands
 * fail at once while disconnected (the engine's failure mode answers meanwhile), nothing is
 * resent blindly, and the client reconnects for ever.
 */
import type { ConnectionOptions } from "node:tls";
import Redis, { Cluster, type ClusterOptions, type RedisOptions } from "ioredis";
import type { HostPort, StoreTarget } from "../../shared/store-url";

/** A Redis store target: one server, Sentinel or Cluster. */
export type RedisTarget = Extract<StoreTarget, { kind: "redis" | "sentinel" | "cluster" }>;

/** TLS material for rediss:// targets (PEM contents, not paths). */
export interface RedisTls {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

/** How to connect besides the target. */
export interface RedisConnectOptions {
  /** Overrides the URL's password (from --store-password-file or GREYFLEET_STORE_PASSWORD). */
  readonly password?: string;
  readonly tls?: RedisTls;
  readonly connectTimeoutMs: number;
}

/** How often a Cluster client re-reads the slot map, ms. */
const CLUSTER_SLOTS_REFRESH_MS = 1_000;

/** Options every greyfleet connection shares. */
function baseOptions(connectTimeoutMs: number): RedisOptions {
  return {
    // Fail fast while disconnected instead of queueing: the failure mode answers meanwhile.
    enableOfflineQueue: false,
    // A decision may already be recorded when its connection drops: never resend it blindly.
    maxRetriesPerRequest: 0,
    connectTimeout: connectTimeoutMs,
    // Reconnect for ever, at most once a second.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
    // Not ioredis' auto-pipelining: it holds every new command until the batch in flight is
    // answered, so the service idles in lockstep with Redis. WriteCoalescer batches instead.
    enableAutoPipelining: false,
  };
}

/**
 * Commands sent in one turn of the event loop leave in one write per server, and a write never
 * waits for the replies to earlier ones: the connections are corked on the first command and
 * uncorked once the turn's I/O callbacks have run.
 */
export class WriteCoalescer {
  private corked = false;

  /** `connections`: the server's connection, or a Cluster's masters (read again every turn). */
  constructor(private readonly connections: () => readonly Redis[]) {}

  /** Call before sending a command. */
  beforeCommand(): void {
    if (this.corked) return;
    const streams: Redis["stream"][] = [];
    for (const client of this.connections()) {
      const stream = client.stream;
      if (stream === undefined || stream.destroyed || client.status !== "ready") continue;
      stream.cork();
      streams.push(stream);
    }
    if (streams.length === 0) return;
    this.corked = true;
    setImmediate(() => {
      this.corked = false;
      for (const stream of streams) stream.uncork();
    });
  }
}

function tlsOptions(target: RedisTarget, tls: RedisTls | undefined): ConnectionOptions | undefined {
  if (!target.tls) return undefined;
  return { ca: tls?.ca, cert: tls?.cert, key: tls?.key };
}

const nodes = (list: readonly HostPort[]) => list.map(({ host, port }) => ({ host, port }));

/** The connected client; `cluster` tells which API it has. */
export type RedisClient =
  | { readonly cluster: false; readonly client: Redis }
  | { readonly cluster: true; readonly client: Cluster };

/** Opens a client for `target`. */
export function connectRedis(target: RedisTarget, options: RedisConnectOptions): RedisClient {
  const password = options.password || target.password || undefined;
  const username = target.username || undefined;
  const tls = tlsOptions(target, options.tls);
  const base = baseOptions(options.connectTimeoutMs);
  if (target.kind === "cluster") {
    const clusterOptions: ClusterOptions = {
      enableOfflineQueue: false,
      enableAutoPipelining: false, // see baseOptions
      // While the cluster is down or failing over, retry finding it for ever (each call is
      // bounded by the engine's timeout, not by ioredis).
      clusterRetryStrategy: (attempt) => Math.min(100 + attempt * 100, 1_000),
      slotsRefreshTimeout: options.connectTimeoutMs,
      // A killed master sends no MOVED: without a periodic refresh the client would keep
      // sending its slots' commands to the dead node. One CLUSTER SLOTS a second finds the
      // promoted replica.
      slotsRefreshInterval: CLUSTER_SLOTS_REFRESH_MS,
      redisOptions: { ...base, username, password, tls },
    };
    return { cluster: true, client: new Cluster(nodes(target.nodes), clusterOptions) };
  }
  if (target.kind === "sentinel") {
    return {
      cluster: false,
      client: new Redis({
        ...base,
        sentinels: nodes(target.nodes),
        name: target.masterName,
        db: target.db,
        username,
        password,
        // The same credentials and TLS for the Sentinels, as most deployments configure them.
        sentinelPassword: password,
        sentinelUsername: username,
        enableTLSForSentinelMode: target.tls,
        tls,
        sentinelTLS: tls,
        sentinelRetryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
      }),
    };
  }
  const [node] = nodes(target.nodes);
  return { cluster: false, client: new Redis({ ...base, ...node, db: target.db, username, password, tls }) };
}
