/**
 * `redis://` store: the fleet store. Each decision is one EVALSHA of lua/decide.lua, so every
 * MX host sees one atomic read-decide-write and one clock (Redis TIME). Expiry is Redis TTL.
 */
import { readFileSync } from "node:fs";
import Redis, { type RedisOptions } from "ioredis";
import { projectFile } from "../../shared/paths";
import type { GreylistPolicy, Outcome } from "../domain/verdict";
import { networkId, RedisKeys, tripletId } from "./keys";
import type { GreylistStore, StoreDecision, TripletQuery } from "./store";

/** The decision script, loaded once per process; ioredis sends EVALSHA and falls back on NOSCRIPT. */
const DECIDE_LUA = readFileSync(projectFile("services/decision/store/lua/decide.lua"), "utf8");

type DecideReply = [code: number, ms: number, nowMs: number];

interface DecideCommand {
  greyfleetDecide(tripletKey: string, clientKey: string, ...args: (string | number)[]): Promise<DecideReply>;
}

/** Options of the Redis store. */
export interface RedisStoreOptions {
  /** redis://[user:pass@]host:port[/db] */
  readonly url: string;
  /** Prefix of every key (default "gf:"). */
  readonly keyPrefix: string;
  /** Connecting may take this many ms before it is retried. */
  readonly connectTimeoutMs: number;
  /** Called on connection errors and state changes, for logging. */
  readonly onEvent?: (event: "error" | "ready" | "close", detail?: string) => void;
  /** Test hook: ms added to Redis TIME, to move the store's clock without sleeping. */
  readonly clockOffsetMs?: () => number;
}

const policyArguments = new WeakMap<GreylistPolicy, string>();

/** decide.lua's ARGV[1], built once per policy object. */
function policyArgument(policy: GreylistPolicy): string {
  let argument = policyArguments.get(policy);
  if (argument === undefined) {
    argument = [
      policy.delayMs,
      policy.retryWindowMs,
      policy.maxAgeMs,
      policy.autoWhitelistPasses,
      policy.autoWhitelistCountIntervalMs,
    ].join(",");
    policyArguments.set(policy, argument);
  }
  return argument;
}

function toOutcome(reply: DecideReply): Outcome {
  const [code, ms] = reply;
  switch (code) {
    case 1:
      return { kind: "new_triplet", retryAfterMs: ms };
    case 2:
      return { kind: "too_early", retryAfterMs: ms };
    case 3:
      return { kind: "passed_after_retry", delayedMs: ms };
    case 4:
      return { kind: "known_triplet" };
    case 5:
      return { kind: "client_auto_whitelisted" };
    default:
      throw new Error(`decide.lua returned unknown code ${String(code)}`);
  }
}

/**
 * Connection options shared by every greyfleet Redis client. Commands get no timeout of their
 * own: the engine bounds every call by the store timeout and the caller's deadline, and answers
 * by the failure mode past it; a late reply is then simply dropped.
 */
export function redisClientOptions(connectTimeoutMs: number): RedisOptions {
  return {
    // Fail fast while disconnected instead of queueing: the failure mode answers meanwhile.
    enableOfflineQueue: false,
    // A decision may already be recorded when its connection drops: never resend it blindly.
    maxRetriesPerRequest: 0,
    connectTimeout: connectTimeoutMs,
    // Reconnect for ever, at most once a second.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
    enableAutoPipelining: true,
    lazyConnect: false,
  };
}

/** The Redis store. */
export class RedisStore implements GreylistStore {
  readonly kind = "redis";
  private readonly redis: Redis & DecideCommand;
  private readonly keys: RedisKeys;
  private readonly clockOffsetMs: () => number;

  constructor(options: RedisStoreOptions) {
    const redis = new Redis(options.url, redisClientOptions(options.connectTimeoutMs));
    redis.defineCommand("greyfleetDecide", { numberOfKeys: 2, lua: DECIDE_LUA });
    this.redis = redis as Redis & DecideCommand;
    this.keys = new RedisKeys(options.keyPrefix);
    this.clockOffsetMs = options.clockOffsetMs ?? (() => 0);
    const onEvent = options.onEvent ?? (() => {});
    redis.on("error", (error: Error) => onEvent("error", error.message));
    redis.on("ready", () => onEvent("ready"));
    redis.on("close", () => onEvent("close"));
  }

  async decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision> {
    const netId = networkId(query.network);
    const reply = await this.redis.greyfleetDecide(
      this.keys.triplet(netId, tripletId(query)),
      this.keys.client(netId),
      policyArgument(policy),
      query.singleUse ? "1" : "0",
      this.clockOffsetMs(),
    );
    return { outcome: toOutcome(reply), nowMs: reply[2] };
  }

  waitUntilReady(timeoutMs: number): Promise<void> {
    if (this.redis.status === "ready") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.redis.off("ready", onReady);
        reject(new Error(`Redis not reachable within ${timeoutMs} ms`));
      }, timeoutMs);
      const onReady = (): void => {
        clearTimeout(timer);
        resolve();
      };
      this.redis.once("ready", onReady);
    });
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async close(): Promise<void> {
    try {
      await this.redis.quit();
    } catch {
      // Not connected: QUIT cannot be sent, so just drop the socket and stop reconnecting.
      this.redis.disconnect();
    }
  }
}
