/**
 * `sqlite:PATH` store: the embedded default for one host. WAL journal with synchronous=NORMAL:
 * every committed decision survives a crash or kill -9 of the process (an OS crash may lose the
 * last transactions, which only means one more greylisting round for those triplets).
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { ListEntryValue, ListKindName } from "../domain/lists";
import type { ClientRecord, GreylistPolicy } from "../domain/verdict";
import { networkId, outboundId, tripletId } from "./keys";
import { decideInTransaction, inspectInTransaction, type RecordTransaction, type StoredTriplet } from "./record-store";
import { migrate } from "./sqlite-schema";
import type {
  EntryKey,
  ImportResult,
  Inspection,
  OutboundPair,
  StateRecord,
  Store,
  StoreDecision,
  StoreStats,
  TripletQuery,
} from "./store";

/** Expired rows are deleted in batches of this size, every PRUNE_INTERVAL_MS. */
const PRUNE_BATCH_ROWS = 5_000;
const PRUNE_INTERVAL_MS = 60_000;
/** An export reads rows in pages of this size (see exportRecords). */
const EXPORT_PAGE_ROWS = 1_000;

interface TripletRow {
  id: string;
  network_id: string;
  first_seen_ms: number;
  passed_ms: number;
  last_seen_ms: number;
  expires_ms: number;
}

interface ClientRow {
  network_id: string;
  passes: number;
  last_counted_ms: number;
  last_seen_ms: number;
  expires_ms: number;
}

interface EntryRow {
  kind: string;
  value: string;
  expires_ms: number;
  comment: string;
  created_ms: number;
  source: string;
}

function toEntry(row: EntryRow): ListEntryValue {
  return {
    kind: row.kind as ListKindName,
    value: row.value,
    expiresAtMs: row.expires_ms,
    comment: row.comment,
    createdAtMs: row.created_ms,
    source: row.source,
  };
}

/** SQLite store with an injected clock (epoch ms). */
export class SqliteStore implements Store {
  readonly kind = "sqlite";
  private readonly db: Database.Database;
  private readonly tx: RecordTransaction;
  private readonly pruneTimer: NodeJS.Timeout;
  private readonly sql;

  constructor(
    readonly path: string,
    private readonly now: () => number = Date.now,
    onPruneError: (error: unknown) => void = () => {},
    /**
     * How long a write waits for another process's lock on the file, ms. A write runs on the event
     * loop, so this bounds how long a locked file can hold up every call: the service gives its
     * store timeout, past which the failure mode answers anyway.
     */
    busyTimeoutMs = 2_000,
  ) {
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path, { timeout: busyTimeoutMs });
    try {
      this.db.pragma("journal_mode = WAL");
      this.db.pragma("synchronous = NORMAL");
      migrate(this.db, path);
    } catch (error) {
      this.db.close();
      throw error;
    }
    const db = this.db;
    this.sql = {
      getTriplet: db.prepare<[string, number], TripletRow>("SELECT * FROM triplets WHERE id = ? AND expires_ms > ?"),
      getClient: db.prepare<[string, number], ClientRow>(
        "SELECT * FROM clients WHERE network_id = ? AND expires_ms > ?",
      ),
      getBlock: db.prepare<[string, number], { expires_ms: number }>(
        "SELECT expires_ms FROM blocks WHERE network_id = ? AND expires_ms > ?",
      ),
      getOutbound: db.prepare<[string, number], { id: string }>(
        "SELECT id FROM outbound WHERE id = ? AND expires_ms > ?",
      ),
      putTriplet: db.prepare(
        "INSERT OR REPLACE INTO triplets (id, network_id, first_seen_ms, passed_ms, last_seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)",
      ),
      deleteTriplet: db.prepare("DELETE FROM triplets WHERE id = ?"),
      putClient: db.prepare(
        "INSERT OR REPLACE INTO clients (network_id, passes, last_counted_ms, last_seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
      ),
      putBlock: db.prepare("INSERT OR REPLACE INTO blocks (network_id, expires_ms) VALUES (?, ?)"),
      putOutbound: db.prepare("INSERT OR REPLACE INTO outbound (id, expires_ms) VALUES (?, ?)"),
      putEntry: db.prepare(
        "INSERT OR REPLACE INTO entries (kind, value, expires_ms, comment, created_ms, source) VALUES (?, ?, ?, ?, ?, ?)",
      ),
      // Restore: the newer record stays (restoreOrder); the last parameter is now, before which a
      // stored record has expired and counts as absent.
      importTriplet: db.prepare(
        `INSERT INTO triplets (id, network_id, first_seen_ms, passed_ms, last_seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET network_id = excluded.network_id, first_seen_ms = excluded.first_seen_ms,
           passed_ms = excluded.passed_ms, last_seen_ms = excluded.last_seen_ms, expires_ms = excluded.expires_ms
         WHERE excluded.last_seen_ms > triplets.last_seen_ms OR triplets.expires_ms <= ?`,
      ),
      importClient: db.prepare(
        `INSERT INTO clients (network_id, passes, last_counted_ms, last_seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (network_id) DO UPDATE SET passes = excluded.passes, last_counted_ms = excluded.last_counted_ms,
           last_seen_ms = excluded.last_seen_ms, expires_ms = excluded.expires_ms
         WHERE excluded.last_seen_ms > clients.last_seen_ms OR clients.expires_ms <= ?`,
      ),
      importBlock: db.prepare(
        `INSERT INTO blocks (network_id, expires_ms) VALUES (?, ?)
         ON CONFLICT (network_id) DO UPDATE SET expires_ms = excluded.expires_ms
         WHERE excluded.expires_ms > blocks.expires_ms OR blocks.expires_ms <= ?`,
      ),
      importOutbound: db.prepare(
        `INSERT INTO outbound (id, expires_ms) VALUES (?, ?)
         ON CONFLICT (id) DO UPDATE SET expires_ms = excluded.expires_ms
         WHERE excluded.expires_ms > outbound.expires_ms OR outbound.expires_ms <= ?`,
      ),
      importEntry: db.prepare(
        `INSERT INTO entries (kind, value, expires_ms, comment, created_ms, source) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (kind, value) DO UPDATE SET expires_ms = excluded.expires_ms, comment = excluded.comment,
           created_ms = excluded.created_ms, source = excluded.source
         WHERE excluded.created_ms > entries.created_ms OR (entries.expires_ms != 0 AND entries.expires_ms <= ?)`,
      ),
      deleteEntry: db.prepare("DELETE FROM entries WHERE kind = ? AND value = ?"),
      bumpVersion: db.prepare("UPDATE meta SET value = value + 1 WHERE key = 'lists_version'"),
      version: db.prepare<[], { value: number }>("SELECT value FROM meta WHERE key = 'lists_version'"),
    };
    const sql = this.sql;
    this.tx = {
      getTriplet(id, nowMs): StoredTriplet | undefined {
        const row = sql.getTriplet.get(id, nowMs);
        return (
          row && {
            firstSeenMs: row.first_seen_ms,
            passedMs: row.passed_ms,
            lastSeenMs: row.last_seen_ms,
            expiresMs: row.expires_ms,
          }
        );
      },
      getClient(netId, nowMs): ClientRecord | undefined {
        const row = sql.getClient.get(netId, nowMs);
        return row && { passes: row.passes, lastCountedMs: row.last_counted_ms, lastSeenMs: row.last_seen_ms };
      },
      getBlock: (netId, nowMs) => sql.getBlock.get(netId, nowMs)?.expires_ms ?? 0,
      hasOutbound: (id, nowMs) => sql.getOutbound.get(id, nowMs) !== undefined,
      putTriplet(id, netId, record, expiresMs): void {
        if (record === null) sql.deleteTriplet.run(id);
        else sql.putTriplet.run(id, netId, record.firstSeenMs, record.passedMs, record.lastSeenMs, expiresMs);
      },
      putClient(netId, record, expiresMs): void {
        sql.putClient.run(netId, record.passes, record.lastCountedMs, record.lastSeenMs, expiresMs);
      },
    };
    const prune = ["triplets", "clients", "blocks", "outbound"].map((table) => {
      const key = table === "clients" || table === "blocks" ? "network_id" : "id";
      return db.prepare(
        `DELETE FROM ${table} WHERE ${key} IN (SELECT ${key} FROM ${table} WHERE expires_ms <= ? LIMIT ${PRUNE_BATCH_ROWS})`,
      );
    });
    this.prune = () => {
      const nowMs = this.now();
      return prune.reduce((deleted, statement) => deleted + statement.run(nowMs).changes, 0);
    };
    this.pruneTimer = setInterval(() => {
      try {
        this.prune();
      } catch (error) {
        onPruneError(error); // e.g. SQLITE_BUSY from another process; the next interval retries
      }
    }, PRUNE_INTERVAL_MS).unref();
  }

  /** Deletes one batch of expired rows per table; returns how many went. */
  readonly prune: () => number;

  decide(query: TripletQuery, policy: GreylistPolicy): Promise<StoreDecision> {
    // IMMEDIATE: take the write lock up front, so two processes on one file never both read "new".
    return this.write(() => decideInTransaction(this.tx, query, policy, this.now()));
  }

  blockNetwork(network: string, durationMs: number): Promise<void> {
    return this.write(() => void this.sql.putBlock.run(networkId(network), this.now() + durationMs));
  }

  learnOutbound(pairs: readonly OutboundPair[], ttlMs: number): Promise<void> {
    return this.write(() => {
      for (const pair of pairs) this.sql.putOutbound.run(outboundId(pair), this.now() + ttlMs);
    });
  }

  listsVersion(): Promise<number> {
    return this.read(() => this.sql.version.get()?.value ?? 0);
  }

  listEntries(): Promise<ListEntryValue[]> {
    return this.read(() => (this.db.prepare("SELECT * FROM entries").all() as EntryRow[]).map(toEntry));
  }

  putEntries(entries: readonly ListEntryValue[]): Promise<void> {
    return this.write(() => {
      for (const e of entries)
        this.sql.putEntry.run(e.kind, e.value, e.expiresAtMs, e.comment, e.createdAtMs, e.source);
      this.sql.bumpVersion.run();
    });
  }

  removeEntries(keys: readonly EntryKey[]): Promise<number> {
    return this.write(() => {
      const removed = keys.reduce((count, key) => count + this.sql.deleteEntry.run(key.kind, key.value).changes, 0);
      this.sql.bumpVersion.run();
      return removed;
    });
  }

  inspect(query: TripletQuery): Promise<Inspection> {
    return this.read(() => inspectInTransaction(this.tx, query, this.now()));
  }

  deleteTriplet(query: TripletQuery): Promise<boolean> {
    return this.write(() => this.sql.deleteTriplet.run(tripletId(query)).changes > 0);
  }

  flushNetwork(network: string): Promise<number> {
    const netId = networkId(network);
    return this.write(() =>
      ["triplets", "clients", "blocks"].reduce(
        (count, table) => count + this.db.prepare(`DELETE FROM ${table} WHERE network_id = ?`).run(netId).changes,
        0,
      ),
    );
  }

  sampleStats(autoWhitelistPasses: number): Promise<StoreStats> {
    return this.stats(autoWhitelistPasses);
  }

  stats(autoWhitelistPasses: number): Promise<StoreStats> {
    return this.read(() => {
      const nowMs = this.now();
      const count = (sql: string, ...args: number[]): number => (this.db.prepare(sql).get(...args) as { n: number }).n;
      return {
        pendingTriplets: count("SELECT COUNT(*) n FROM triplets WHERE expires_ms > ? AND passed_ms = 0", nowMs),
        passedTriplets: count("SELECT COUNT(*) n FROM triplets WHERE expires_ms > ? AND passed_ms > 0", nowMs),
        autoWhitelistedClients:
          autoWhitelistPasses > 0
            ? count("SELECT COUNT(*) n FROM clients WHERE expires_ms > ? AND passes >= ?", nowMs, autoWhitelistPasses)
            : 0,
        greytrappedNetworks: count("SELECT COUNT(*) n FROM blocks WHERE expires_ms > ?", nowMs),
        outboundPairs: count("SELECT COUNT(*) n FROM outbound WHERE expires_ms > ?", nowMs),
      };
    });
  }

  /**
   * Every live record, read a page at a time: a statement left open across a yield (while the
   * caller waits for its client to take more) would refuse every write of this connection, so
   * decisions would fail for as long as an export is paused. Pages follow the primary key, so a
   * record is exported once even if others are written meanwhile (the export is not one snapshot).
   */
  async *exportRecords(): AsyncIterable<StateRecord> {
    const nowMs = this.now();
    for (const row of this.pages<TripletRow>("triplets", "id", nowMs)) {
      yield {
        type: "triplet",
        id: row.id,
        networkId: row.network_id,
        firstSeenMs: row.first_seen_ms,
        passedMs: row.passed_ms,
        lastSeenMs: row.last_seen_ms,
        expiresMs: row.expires_ms,
      };
    }
    for (const row of this.pages<ClientRow>("clients", "network_id", nowMs)) {
      yield {
        type: "client",
        networkId: row.network_id,
        passes: row.passes,
        lastCountedMs: row.last_counted_ms,
        lastSeenMs: row.last_seen_ms,
        expiresMs: row.expires_ms,
      };
    }
    for (const row of this.pages<{ network_id: string; expires_ms: number }>("blocks", "network_id", nowMs)) {
      yield { type: "block", networkId: row.network_id, expiresMs: row.expires_ms };
    }
    for (const row of this.pages<{ id: string; expires_ms: number }>("outbound", "id", nowMs)) {
      yield { type: "outbound", id: row.id, expiresMs: row.expires_ms };
    }
    // List entries are few (an admin's lists): read at once.
    for (const entry of await this.listEntries()) yield { type: "entry", entry };
  }

  /** The live rows of `table` in pages of EXPORT_PAGE_ROWS, by its text primary key `key`. */
  private *pages<Row>(table: string, key: string, nowMs: number): Iterable<Row> {
    const page = this.db.prepare(
      `SELECT * FROM ${table} WHERE expires_ms > ? AND ${key} > ? ORDER BY ${key} LIMIT ${EXPORT_PAGE_ROWS}`,
    );
    for (let after = ""; ; ) {
      const rows = page.all(nowMs, after) as Row[];
      yield* rows;
      const last = rows.at(-1);
      if (rows.length < EXPORT_PAGE_ROWS || last === undefined) return;
      after = String((last as Record<string, unknown>)[key]);
    }
  }

  async importRecords(records: AsyncIterable<StateRecord>): Promise<ImportResult> {
    const counts = { imported: 0, expired: 0, kept: 0 };
    let entries = 0;
    try {
      for await (const record of records) {
        const outcome = this.importOne(record, this.now());
        counts[outcome]++;
        if (outcome === "imported" && record.type === "entry") entries++;
      }
    } finally {
      // Entries written before a failure are in force too, like the ones of a finished import.
      if (entries > 0) this.sql.bumpVersion.run();
    }
    return counts;
  }

  /** Writes one record unless it has expired or the store's is as new or newer. */
  private importOne(record: StateRecord, nowMs: number): "imported" | "expired" | "kept" {
    const { sql } = this;
    let written: Database.RunResult;
    if (record.type === "entry") {
      const e = record.entry;
      if (e.expiresAtMs !== 0 && e.expiresAtMs <= nowMs) return "expired";
      written = sql.importEntry.run(e.kind, e.value, e.expiresAtMs, e.comment, e.createdAtMs, e.source, nowMs);
    } else if (record.expiresMs <= nowMs) {
      return "expired";
    } else if (record.type === "triplet") {
      const r = record;
      written = sql.importTriplet.run(r.id, r.networkId, r.firstSeenMs, r.passedMs, r.lastSeenMs, r.expiresMs, nowMs);
    } else if (record.type === "client") {
      const r = record;
      written = sql.importClient.run(r.networkId, r.passes, r.lastCountedMs, r.lastSeenMs, r.expiresMs, nowMs);
    } else if (record.type === "block") {
      written = sql.importBlock.run(record.networkId, record.expiresMs, nowMs);
    } else {
      written = sql.importOutbound.run(record.id, record.expiresMs, nowMs);
    }
    return written.changes > 0 ? "imported" : "kept";
  }

  ping(): Promise<void> {
    return this.read(() => void this.db.prepare("SELECT 1").get());
  }

  waitUntilReady(): Promise<void> {
    return this.ping();
  }

  close(): Promise<void> {
    clearInterval(this.pruneTimer);
    if (this.db.open) this.db.close();
    return Promise.resolve();
  }

  /** Runs `body` in an IMMEDIATE transaction; errors become rejections. */
  private write<T>(body: () => T): Promise<T> {
    try {
      return Promise.resolve(this.db.transaction(body).immediate());
    } catch (error) {
      return Promise.reject(error);
    }
  }

  private read<T>(body: () => T): Promise<T> {
    try {
      return Promise.resolve(body());
    } catch (error) {
      return Promise.reject(error);
    }
  }
}
