/** The SQLite store's schema and its migrations, by PRAGMA user_version. */
import type Database from "better-sqlite3";

/** The schema version this greyfleet writes. */
export const SQLITE_SCHEMA = 2;

/** Each step takes a database from version i to i + 1. */
const MIGRATIONS: readonly string[] = [
  // 0 -> 1: triplets and client networks.
  `
  CREATE TABLE IF NOT EXISTS triplets (
    id TEXT PRIMARY KEY,            -- tripletId(): hash of network, sender, recipient
    network_id TEXT NOT NULL,       -- networkId() of the client network
    first_seen_ms INTEGER NOT NULL,
    passed_ms INTEGER NOT NULL,     -- 0 while pending
    last_seen_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS triplets_expires ON triplets (expires_ms);
  CREATE TABLE IF NOT EXISTS clients (
    network_id TEXT PRIMARY KEY,
    passes INTEGER NOT NULL,
    last_counted_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS clients_expires ON clients (expires_ms);
  `,
  // 1 -> 2: greytrap blocks, outbound pairs, list entries.
  `
  CREATE INDEX IF NOT EXISTS triplets_network ON triplets (network_id);
  CREATE TABLE IF NOT EXISTS blocks (
    network_id TEXT PRIMARY KEY,
    expires_ms INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS outbound (
    id TEXT PRIMARY KEY,            -- outboundId(): hash of external and local address
    expires_ms INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS outbound_expires ON outbound (expires_ms);
  CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,    -- 0 = never
    comment TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (kind, value)
  ) WITHOUT ROWID;
  CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  INSERT OR IGNORE INTO meta (key, value) VALUES ('lists_version', 0);
  `,
];

/** Brings `db` to SQLITE_SCHEMA; refuses a newer schema with a message naming both versions. */
export function migrate(db: Database.Database, path: string): void {
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > SQLITE_SCHEMA) {
    throw new Error(`${path} has schema version ${version}; this greyfleet reads up to version ${SQLITE_SCHEMA}`);
  }
  db.transaction(() => {
    for (let step = version; step < SQLITE_SCHEMA; step++) db.exec(MIGRATIONS[step] as string);
    db.pragma(`user_version = ${SQLITE_SCHEMA}`);
  }).immediate();
}
