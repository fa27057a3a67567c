/**
 * `sqlite:PATH` store: the embedded default for one host. WAL journal with synchronous=NORMAL:
 * every committed decision survives a crash or kill -9 of the process (an OS crash may lose the
 * last transactions, which only means one more greylisting round for those triplets).
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { ClientRecord, GreylistPolicy, TripletRecord } from "../domain/verdict";
import { SCHEMA_VERSION } from "./keys";
import { decideInTransaction, type RecordTransaction } from "./record-store";
import type { GreylistStore, StoreDecision, TripletQuery } from "./store";

/** Expired rows are deleted in batches of this size, every PRUNE_INTERVAL_MS. */
const PRUNE_BATCH_ROWS = 5_000;
const PRUNE_INTERVAL_MS = 60_000;

const SCHEMA = `
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
`;

interface TripletRow {
  first_seen_ms: number;
  passed_ms: number;
  last_seen_ms: number;
}

interface ClientRow {
  passes: number;
  last_counted_ms: number;
  last_seen_ms: number;
}

/** SQLite store with an injected clock (epoch ms). */
export class SqliteStore implements GreylistStore {
  readonly kind = "sqlite";
  private readonly db: Database.Database;
  private readonly decideTx: (query: TripletQuery, policy: GreylistPolicy, nowMs: number) => StoreDecision;
  private readonly pruneTimer: NodeJS.Timeout;
  private readonly pruneStatements: Database.Statement[];

  constructor(
    readonly path: string,
    private readonly now: () => number = Date.now,
    onPruneError: (error: unknown) => void = () => {},
  ) {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { timeout: 2_000 });
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    const version = this.db.pragma("user_version", { simple: true }) as number;
    if (version !== 0 && version !== SCHEMA_VERSION) {
      this.db.close();
      throw new Error(`${path} has schema version ${version}; this greyfleet reads version ${SCHEMA_VERSION}`);
    }
    this.db.exec(SCHEMA);
    this.db.pragma(`user_version = ${SCHEMA_VERSION}`);

    const getTriplet = this.db.prepare<[string, number], TripletRow>(
      "SELECT first_seen_ms, passed_ms, last_seen_ms FROM triplets WHERE id = ? AND expires_ms > ?",
    );
    const getClient = this.db.prepare<[string, number], ClientRow>(
      "SELECT passes, last_counted_ms, last_seen_ms FROM clients WHERE network_id = ? AND expires_ms > ?",
    );
    const putTriplet = this.db.prepare(
      "INSERT OR REPLACE INTO triplets (id, network_id, first_seen_ms, passed_ms, last_seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
    );
    const deleteTriplet = this.db.prepare("DELETE FROM triplets WHERE id = ?");
    const putClient = this.db.prepare(
      "INSERT OR REPLACE INTO clients (network_id, passes, last_counted_ms, last_seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
    );
    const tx: RecordTransaction = {
      getTriplet(id, nowMs): TripletRecord | undefined {
        const row = getTriplet.get(id, nowMs);
        return row && { firstSeenMs: row.first_seen_ms, passedMs: row.passed_ms, lastSeenMs: row.last_seen_ms };
      },
      getClient(netId, nowMs): ClientRecord | undefined {
        const row = getClient.get(netId, nowMs);
        return row && { passes: row.passes, lastCountedMs: row.last_counted_ms, lastSeenMs: row.last_seen_ms };
      },
      putTriplet(id, netId, record, expiresMs): void {
        if (record === null) deleteTriplet.run(id);
        else putTriplet.run(id, netId, record.firstSeenMs, record.passedMs, record.lastSeenMs, expiresMs);
      },
      putClient(netId, record, expiresMs): void {
        putClient.run(netId, record.passes, record.lastCountedMs, record.lastSeenMs, expiresMs);
      },
    };
    const transaction = this.db.transaction((query: TripletQuery, policy: GreylistPolicy, nowMs: number) =>
      decideInTransaction(tx, query, policy, nowMs),
    );
    // IMMEDIATE: take the write lock up front, so two processes on one file never both read "new".
    this.decideTx = (query, policy, nowMs) => transaction.immediate(query, policy, nowMs);
    this.pruneStatements = [
      this.db.prepare(
        `DELETE FROM triplets WHERE id IN (SELECT id FROM triplets WHERE expires_ms <= ? LIMIT ${PRUNE_BATCH_ROWS})`,
      ),
      this.db.prepare(
        `DELETE FROM clients WHERE network_id IN (SELECT network_id FROM clients WHERE expires_ms <= ? LIMIT ${PRUNE_BATCH_ROWS})`,
      ),
    ];
    this.pruneTimer = setInterval(() => {
      try {
        this.prune();
      } catch (error) {
        onPruneError(error); // e.g. SQLITE_BUSY from another process; the next interval retries
      }
    }, PRUNE_INTERVAL_MS).unref();
  }

  decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision> {
    try {
      return Promise.resolve(this.decideTx(query, policy, this.now()));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Deletes one batch of expired rows per table; returns how many went. */
  prune(): number {
    const nowMs = this.now();
    let deleted = 0;
    for (const statement of this.pruneStatements) deleted += statement.run(nowMs).changes;
    return deleted;
  }

  waitUntilReady(): Promise<void> {
    return this.ping();
  }

  ping(): Promise<void> {
    try {
      this.db.prepare("SELECT 1").get();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  close(): Promise<void> {
    clearInterval(this.pruneTimer);
    if (this.db.open) this.db.close();
    return Promise.resolve();
  }
}
