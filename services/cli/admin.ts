/**
 * `greyfleet admin`: the command line over AdminService. Tables for people, `--json` for
 * scripts; every error names the offending input.
 */
import { createReadStream, createWriteStream, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { type ListEntry, ListKind, StateRecord } from "../contract/gen/greyfleet/v1/admin";
import {
  actionToJSON,
  type CheckRequest,
  CheckResponse,
  ProtocolState,
  reasonToJSON,
} from "../contract/gen/greyfleet/v1/greylist";
import {
  LATEST_TIME_MS,
  LIST_KIND_NAMES,
  type ListKindName,
  MAX_NOTE_BYTES,
  truncateUtf8,
} from "../decision/domain/lists";
import { kindOf } from "../decision/rpc/admin-convert";
import { parseDurationMs } from "../shared/durations";
import { channelCredentials, channelOptions } from "../shared/tls";
import { writableAgain } from "../shared/writable";
import { AdminCallError, AdminClient } from "./admin-client";
import { IMPORT_FORMATS, type ImportFormat, parseImport } from "./import-formats";
import { printTable } from "./table";

/** A mistake in the command line: printed as is, exit status 2. */
class UsageError extends Error {}

export const ADMIN_USAGE = `usage: greyfleet admin [--server HOST:PORT] [--json] <command> ...

  list [KIND]                               list entries (all kinds, or one)
  add KIND VALUE [--expires E] [--comment C] add or replace an entry
  remove KIND VALUE                         remove an entry
  import FORMAT FILE [--expires E] [--comment C]
                                            add the entries of a classic list file; report the lines
                                            it could not parse (FORMAT: ${IMPORT_FORMATS.join(", ")})
  explain --client IP --sender S --recipient R [--client-name N] [--helo H] [--sasl USER] [--stage rcpt|data]
                                            what Check would answer now, and why (changes nothing)
  delete --client IP --sender S --recipient R
                                            forget one triplet
  flush ADDRESS                             forget a client network, the grouping network of ADDRESS (triplets, auto-whitelist, greytrap block)
  stats                                     counts of the state and the lists
  export [FILE]                             the whole state as JSON Lines (stdout by default)
  restore FILE                              write a JSON Lines export into the store ("-" = stdin);
                                            where the store holds a record as new or newer, it stays

KIND: ${LIST_KIND_NAMES.join(", ")}
E (expiry): a duration from now (30d, 12h) or a date (2026-12-31, 2026-12-31T18:00:00Z)
--server defaults to $GREYFLEET_ADMIN_SERVER or 127.0.0.1:50051. TLS: --tls-ca-file (the service's CA),
--tls-cert-file and --tls-key-file (an admin client certificate), --tls-server-name. An admin token
comes from --token-file or $GREYFLEET_ADMIN_TOKEN.
`;

/** Entries per AddEntries call of an import (well under the service's 1 MiB message limit). */
const IMPORT_BATCH = 5_000;

function kind(text: string | undefined): ListKindName {
  const name = (text ?? "").replaceAll("-", "_") as ListKindName;
  if (!LIST_KIND_NAMES.includes(name))
    throw new UsageError(`unknown list kind "${text ?? ""}" (${LIST_KIND_NAMES.join(", ")})`);
  return name;
}

function expiry(text: string | undefined, nowMs = Date.now()): number {
  if (text === undefined) return 0;
  const duration = parseDurationMs(text, "s");
  const date = typeof duration === "number" ? nowMs + duration : Date.parse(text);
  if (Number.isNaN(date))
    throw new UsageError(`--expires "${text}" is neither a duration (30d) nor a date (2026-12-31)`);
  // A past date would be stored as given, and 0 means "never expires".
  if (date <= nowMs) throw new UsageError(`--expires "${text}" is in the past`);
  if (date > LATEST_TIME_MS) throw new UsageError(`--expires "${text}" is later than the year 2200`);
  return date;
}

function entry(kindName: ListKindName, value: string, expires: number, comment: string, source = ""): ListEntry {
  return { kind: kindOf(kindName), value, expiresAtUnixMs: expires, comment, createdAtUnixMs: 0, source };
}

const kindText = (k: ListKind): string =>
  k === ListKind.LIST_KIND_UNSPECIFIED ? "-" : ListKind[k].replace("LIST_KIND_", "").toLowerCase();
/** The source of imported entries: "import:" and the file, only its end if the whole is too long. */
function importSource(file: string): string {
  const source = `import:${file}`;
  if (Buffer.byteLength(source) <= MAX_NOTE_BYTES) return source;
  // The end of the path: its characters reversed, truncated, and turned back.
  const reversed = [...file].reverse().join("");
  const room = MAX_NOTE_BYTES - Buffer.byteLength("import:…");
  return `import:…${[...truncateUtf8(reversed, room)].reverse().join("")}`;
}

/** An epoch-ms time as ISO 8601; one a Date cannot hold (stored by an older version) as the number. */
const time = (ms: number): string => {
  if (ms === 0) return "-";
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? `${ms} ms` : date.toISOString().replace(".000Z", "Z");
};

function checkFrom(values: Readonly<Record<string, string | boolean | undefined>>): CheckRequest {
  const text = (name: string): string | undefined => {
    const value = values[name];
    return typeof value === "string" ? value : undefined;
  };
  for (const required of ["client", "sender", "recipient"]) {
    if (text(required) === undefined) throw new UsageError(`--${required} is required`);
  }
  const stage = text("stage") ?? "rcpt";
  if (stage !== "rcpt" && stage !== "data") throw new UsageError(`--stage "${stage}" is not rcpt or data`);
  return {
    clientAddress: text("client") ?? "",
    clientName: text("client-name") ?? "",
    heloName: text("helo") ?? "",
    sender: text("sender") === "<>" ? "" : (text("sender") ?? ""),
    recipient: text("recipient") ?? "",
    saslUsername: text("sasl") ?? "",
    queueId: "",
    instance: "",
    protocolState: stage === "data" ? ProtocolState.PROTOCOL_STATE_DATA : ProtocolState.PROTOCOL_STATE_RCPT,
    mtaId: "admin",
  };
}

/**
 * The records of a JSON Lines dump, every line checked before the first is sent: a bad or cut-off
 * line stops the restore before anything is written. A file is read twice (checked, then sent);
 * standard input is held in memory.
 */
async function readRecords(file: string): Promise<AsyncIterable<StateRecord>> {
  if (file === "-") {
    const records: StateRecord[] = [];
    for await (const record of parseRecords(file, process.stdin)) records.push(record);
    return (async function* () {
      yield* records;
    })();
  }
  for await (const _ of parseRecords(file, createReadStream(file))) {
    // Only checking.
  }
  return parseRecords(file, createReadStream(file));
}

/** The kinds of record an export writes: each line is an object with exactly one of them. */
const RECORD_KINDS: readonly string[] = ["triplet", "client", "entry", "block", "outbound"];

/** A line's JSON as a record, or an error saying why it is not one. */
function recordFrom(json: unknown): StateRecord {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new Error("not a JSON object");
  const keys = Object.keys(json);
  const [kind] = keys;
  if (keys.length !== 1 || kind === undefined || !RECORD_KINDS.includes(kind)) {
    throw new Error(`expected one of ${RECORD_KINDS.join(", ")}, found ${keys.join(", ") || "nothing"}`);
  }
  const value: unknown = (json as Record<string, unknown>)[kind];
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error(`${kind} is not an object`);
  return StateRecord.fromJSON(json);
}

async function* parseRecords(file: string, input: NodeJS.ReadableStream): AsyncIterable<StateRecord> {
  let line = 0;
  for await (const text of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
    line++;
    if (text.trim() === "") continue;
    try {
      yield recordFrom(JSON.parse(text));
    } catch (error) {
      throw new UsageError(
        `${file} line ${line}: not a record (${error instanceof Error ? error.message : String(error)})`,
      );
    }
  }
}

function parseAdminArgs(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    strict: true,
    options: {
      server: { type: "string", default: process.env.GREYFLEET_ADMIN_SERVER ?? "127.0.0.1:50051" },
      "tls-ca-file": { type: "string", default: "" },
      "tls-cert-file": { type: "string", default: "" },
      "tls-key-file": { type: "string", default: "" },
      "tls-server-name": { type: "string", default: "" },
      "token-file": { type: "string", default: "" },
      json: { type: "boolean", default: false },
      expires: { type: "string" },
      comment: { type: "string", default: "" },
      client: { type: "string" },
      "client-name": { type: "string" },
      helo: { type: "string" },
      sender: { type: "string" },
      recipient: { type: "string" },
      sasl: { type: "string" },
      stage: { type: "string" },
    },
  });
}

/** TLS and the admin token: the token from --token-file or GREYFLEET_ADMIN_TOKEN, never a flag. */
function adminTransport(values: ReturnType<typeof parseAdminArgs>["values"]) {
  const tls = {
    caFile: values["tls-ca-file"] ?? "",
    certFile: values["tls-cert-file"] ?? "",
    keyFile: values["tls-key-file"] ?? "",
    serverName: values["tls-server-name"] ?? "",
  };
  const tokenFile = values["token-file"] ?? "";
  const token = tokenFile !== "" ? readFileSync(tokenFile, "utf8").trim() : (process.env.GREYFLEET_ADMIN_TOKEN ?? "");
  // The CLI is short-lived: certificate files are read once (a long reload interval).
  return { credentials: channelCredentials(tls, 3_600_000, ""), options: channelOptions(tls), token };
}

/** Runs one admin command; returns the exit status. */
export async function runAdmin(argv: readonly string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  let parsed: ReturnType<typeof parseAdminArgs>;
  try {
    parsed = parseAdminArgs(argv);
  } catch (error) {
    process.stderr.write(
      `greyfleet admin: ${error instanceof Error ? error.message : String(error)}\n\n${ADMIN_USAGE}`,
    );
    return 2;
  }
  const { values, positionals } = parsed;
  const [command, ...args] = positionals;
  const print = (json: unknown, table: () => void): void => {
    if (values.json) out.write(`${JSON.stringify(json)}\n`);
    else table();
  };
  let client: AdminClient;
  try {
    client = new AdminClient(values.server, adminTransport(values));
  } catch (error) {
    process.stderr.write(`greyfleet admin: ${error instanceof Error ? error.message : String(error)}\n`);
    return 2;
  }
  try {
    switch (command) {
      case "list": {
        const entries = await client.listEntries(
          args[0] === undefined ? ListKind.LIST_KIND_UNSPECIFIED : kindOf(kind(args[0])),
        );
        print(
          entries.map((e) => ({ ...e, kind: kindText(e.kind) })),
          () =>
            printTable(
              out,
              ["kind", "value", "expires", "source", "comment"],
              entries.map((e) => [kindText(e.kind), e.value, time(e.expiresAtUnixMs), e.source, e.comment]),
            ),
        );
        return 0;
      }
      case "add":
      case "remove": {
        if (args.length !== 2) throw new UsageError(`${command} takes KIND and VALUE`);
        const item = entry(kind(args[0]), args[1] as string, expiry(values.expires), values.comment ?? "", "admin");
        const result = command === "add" ? await client.addEntries([item]) : await client.removeEntries([item]);
        const count = "added" in result ? result.added : result.removed;
        print(result, () => out.write(`${command === "add" ? "added" : "removed"} ${count}\n`));
        for (const problem of result.problems)
          process.stderr.write(`greyfleet admin: "${problem.value}": ${problem.problem}\n`);
        return result.problems.length > 0 ? 1 : 0;
      }
      case "import": {
        const [format, file] = args;
        if (!IMPORT_FORMATS.includes(format as ImportFormat) || file === undefined) {
          throw new UsageError(`import takes FORMAT (${IMPORT_FORMATS.join(", ")}) and FILE`);
        }
        const parsed = parseImport(format as ImportFormat, readFileSync(file, "utf8"));
        const expires = expiry(values.expires);
        const entries = parsed.entries.map((e) =>
          entry(e.kind, e.value, expires, values.comment || e.comment, importSource(file)),
        );
        // In calls of IMPORT_BATCH entries: one message of 100,000 would be over gRPC's 1 MiB.
        const result = { added: 0, problems: [] as { index: number; value: string; problem: string }[] };
        for (let start = 0; start < entries.length; start += IMPORT_BATCH) {
          const batch = await client.addEntries(entries.slice(start, start + IMPORT_BATCH));
          result.added += batch.added;
          result.problems.push(...batch.problems.map((p) => ({ ...p, index: p.index + start })));
        }
        const lineProblems = [
          ...parsed.problems.map((p) => ({ line: p.line, text: p.text, problem: p.problem })),
          ...result.problems.map((p) => ({
            line: parsed.entries[p.index]?.line ?? 0,
            text: p.value,
            problem: p.problem,
          })),
        ];
        print({ added: result.added, problems: lineProblems }, () => {
          out.write(`added ${result.added} entries from ${file}\n`);
          for (const p of lineProblems) out.write(`${file}:${p.line}: ${p.problem}: ${p.text}\n`);
        });
        return lineProblems.length > 0 ? 1 : 0;
      }
      case "explain": {
        const found = await client.explain(checkFrom(values));
        const answer = found.wouldAnswer ?? CheckResponse.fromPartial({});
        const json = { ...found, wouldAnswer: CheckResponse.toJSON(answer) };
        print(json, () => {
          const reply = answer.smtpCode ? ` (${answer.smtpCode} ${answer.enhancedStatusCode} ${answer.smtpText})` : "";
          out.write(`answer:    ${actionToJSON(answer.action).replace("ACTION_", "").toLowerCase()}${reply}\n`);
          out.write(`reason:    ${reasonToJSON(answer.reason).replace("REASON_", "").toLowerCase()}\n`);
          out.write(`why:       ${found.explanation}\n`);
          out.write(
            `triplet:   ${found.clientNetwork}, ${found.normalisedSender || "<>"} -> ${found.normalisedRecipient}\n`,
          );
          out.write(
            `first seen ${time(found.firstSeenUnixMs)}, passed ${time(found.passedUnixMs)}, last seen ${time(found.lastSeenUnixMs)}\n`,
          );
          out.write(`client network deliveries counted: ${found.clientPasses}\n`);
        });
        return 0;
      }
      case "delete": {
        const deleted = await client.deleteTriplet(checkFrom(values));
        print({ deleted }, () => out.write(deleted ? "deleted\n" : "no such triplet\n"));
        return deleted ? 0 : 1;
      }
      case "flush": {
        if (args.length !== 1) throw new UsageError("flush takes one client ADDRESS");
        const result = await client.flushNetwork(args[0] as string);
        print(result, () => out.write(`flushed ${result.clientNetwork}: ${result.removed} records\n`));
        return 0;
      }
      case "stats": {
        const stats = await client.stats();
        print(stats, () =>
          printTable(
            out,
            ["what", "count"],
            [
              ["pending triplets", String(stats.pendingTriplets)],
              ["passed triplets", String(stats.passedTriplets)],
              ["auto-whitelisted clients", String(stats.autoWhitelistedClients)],
              ["greytrapped networks", String(stats.greytrappedNetworks)],
              ["outbound pairs", String(stats.outboundPairs)],
              ...Object.entries(stats.listEntries).map(([k, n]) => [`list ${k}`, String(n)]),
            ],
          ),
        );
        return 0;
      }
      case "export": {
        const file = args[0] === undefined || args[0] === "-" ? undefined : args[0];
        const target: NodeJS.WritableStream = file === undefined ? out : createWriteStream(file);
        // A file that cannot be written (no such directory, disk full) ends the export with its reason.
        let failed: Error | undefined;
        target.on("error", (error: Error) => {
          failed ??= error;
        });
        let count = 0;
        for await (const record of client.export()) {
          if (failed) break;
          if (!target.write(`${JSON.stringify(StateRecord.toJSON(record))}\n`)) await writableAgain(target);
          count++;
        }
        if (file !== undefined && !failed) await new Promise<void>((resolve) => target.end(() => resolve()));
        if (failed) throw new AdminCallError(`cannot write ${file ?? "the export"}: ${failed.message}`);
        process.stderr.write(`exported ${count} records\n`);
        return 0;
      }
      case "restore": {
        if (args.length !== 1) throw new UsageError("restore takes one FILE (or - for stdin)");
        const result = await client.import(await readRecords(args[0] as string));
        print(result, () =>
          out.write(
            `imported ${result.imported} records, kept ${result.kept} the store held as new or newer, ` +
              `skipped ${result.expired} expired\n`,
          ),
        );
        return 0;
      }
      default:
        throw new UsageError(command === undefined ? "a command is needed" : `unknown command "${command}"`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`greyfleet admin: ${error.message}\n\n${ADMIN_USAGE}`);
      return 2;
    }
    if (error instanceof AdminCallError) {
      process.stderr.write(`greyfleet admin: ${error.message}\n`);
      return 1;
    }
    throw error;
  } finally {
    client.close();
  }
}
