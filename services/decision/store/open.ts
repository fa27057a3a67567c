/** Opens the store a --store URL names. */
import { join } from "node:path";
import { SettingError } from "../../shared/errors";
import { parseStoreUrl } from "../../shared/store-url";
import { MemoryStore } from "./memory";
import { RedisStore } from "./redis";
import type { RedisTls } from "./redis-connect";
import { SqliteStore } from "./sqlite";
import type { Store } from "./store";

/** A Redis connection attempt that takes longer is abandoned and retried. */
const REDIS_CONNECT_TIMEOUT_MS = 2_000;

/** What opening a store needs besides its URL. */
export interface OpenStoreOptions {
  /** Directory of the default SQLite file (for "sqlite:" without a path). */
  readonly dataDir: string;
  readonly redisKeyPrefix: string;
  /** Overrides the URL's password (from a file or the environment). */
  readonly password?: string;
  /** TLS material for rediss:// URLs (PEM contents). */
  readonly tls?: RedisTls;
  /** Connection events and background errors, for logging. */
  readonly onEvent: (event: string, detail?: string) => void;
  /** How long a SQLite write waits for another process's lock, ms (the store timeout). */
  readonly sqliteBusyTimeoutMs?: number;
}

/** Opens the store; throws with a message naming --store if it cannot be opened. */
export function openStore(url: string, options: OpenStoreOptions): Store {
  const target = parseStoreUrl(url);
  if ("error" in target) throw new SettingError(`--store: ${target.error}`);
  if (target.kind === "memory") return new MemoryStore();
  if (target.kind === "sqlite") {
    const path = target.path || join(options.dataDir, "greyfleet.sqlite");
    try {
      return new SqliteStore(
        path,
        Date.now,
        (error) => options.onEvent("error", String(error)),
        options.sqliteBusyTimeoutMs,
      );
    } catch (error) {
      throw new Error(`--store sqlite:${path}: ${error instanceof Error ? error.message : String(error)}`, {
        cause: error,
      });
    }
  }
  return new RedisStore({
    target,
    password: options.password,
    tls: options.tls,
    keyPrefix: options.redisKeyPrefix,
    connectTimeoutMs: REDIS_CONNECT_TIMEOUT_MS,
    onEvent: options.onEvent,
  });
}
