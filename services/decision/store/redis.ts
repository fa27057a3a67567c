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
  /** A command not answered within this many ms fails (the engine's failure mode decides). */
  readonly commandTimeoutMs: number;
  /** Called on connection errors and state changes, for logging. */
  readonly onEvent?: (event: "error" | "ready" | "close", detail?: string) => void;
  /** Test hook: ms added to Redis TIME, to move the store's clock without sleeping. */
  readonly clockOffsetMs?: () => number;
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

/** Connection options shared by every greyfleet Redis client. */
export function redisClientOptions(commandTimeoutMs: number): RedisOptions {
  return {
    // Fail fast while disconnected instead of queueing: the failure mode answers meanwhile.
    enableOfflineQueue: false,
    // A decision may already be recorded when its connection drops: never resend it blindly.
    maxRetriesPerRequest: 0,
    commandTimeout: commandTimeoutMs,
    connectTimeout: 2_000,
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
    const redis = new Redis(options.url, redisClientOptions(options.commandTimeoutMs));
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
      policy.delayMs,
      policy.retryWindowMs,
      policy.maxAgeMs,
      policy.autoWhitelistPasses,
      policy.autoWhitelistCountIntervalMs,
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
