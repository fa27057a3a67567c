/**
 * The administrator's operations, independent of gRPC: list entries (checked and normalised),
 * explain (what Check would answer now, changing nothing), deleting and flushing, statistics,
 * export and import. rpc/admin-service.ts puts them on the wire.
 */
import { type CheckRequest, type CheckResponse, Reason } from "../contract/gen/greyfleet/v1/greylist";
import { CONTROL_CHARACTER } from "../shared/check-fields";
import { GreyfleetError } from "../shared/errors";
import { parseIp } from "./domain/ip";
import {
  LATEST_TIME_MS,
  type ListEntryValue,
  type ListKindName,
  MAX_NOTE_BYTES,
  normaliseEntryValue,
  truncateUtf8,
} from "./domain/lists";
import { clientNetwork, type NetworkGrouping } from "./domain/normalise";
import { type GreylistPolicy, verdict } from "./domain/verdict";
import type { Engine } from "./engine";
import type { ListsCache } from "./lists-cache";
import { applyRules } from "./rules";
import type { EntryKey, ImportResult, StateRecord, Store, StoreOutcome, StoreStats, TripletQuery } from "./store/store";
import { isInvalid, type ValidCheck, validateCheck } from "./validate";

/** An entry that was not applied, and why. */
export interface EntryProblem {
  readonly index: number;
  readonly value: string;
  readonly problem: string;
}

/** What Explain found. */
export interface Explanation {
  readonly response: CheckResponse;
  readonly explanation: string;
  readonly query: TripletQuery;
  readonly firstSeenMs: number;
  readonly passedMs: number;
  readonly lastSeenMs: number;
  readonly clientPasses: number;
}

/** The administrator's operations over one store. */
export class Admin {
  constructor(
    private readonly deps: {
      readonly engine: Engine;
      readonly store: Store;
      readonly lists: ListsCache;
      readonly policy: GreylistPolicy;
      readonly grouping: NetworkGrouping;
    },
  ) {}

  /** Entries of one kind (or all), expired ones left out; the default whitelist included. */
  async listEntries(kind: ListKindName | undefined, nowMs = Date.now()): Promise<ListEntryValue[]> {
    await this.deps.lists.refresh();
    return this.deps.lists.entries.filter(
      (entry) => (kind === undefined || entry.kind === kind) && (entry.expiresAtMs === 0 || entry.expiresAtMs > nowMs),
    );
  }

  /** Checks, normalises and stores entries; returns how many were stored and the refused ones. */
  async addEntries(entries: readonly ListEntryValue[]): Promise<{ added: number; problems: EntryProblem[] }> {
    const problems: EntryProblem[] = [];
    const valid: ListEntryValue[] = [];
    const nowMs = Date.now();
    entries.forEach((entry, index) => {
      const checked = checkEntry(entry);
      if ("problem" in checked) problems.push({ index, value: entry.value, problem: checked.problem });
      else if (entry.expiresAtMs !== 0 && entry.expiresAtMs <= nowMs) {
        problems.push({ index, value: entry.value, problem: "expires in the past" });
      } else {
        valid.push({ ...entry, value: checked.value, createdAtMs: nowMs, source: entry.source || "admin" });
      }
    });
    if (valid.length > 0) {
      await this.deps.store.putEntries(valid);
      await this.deps.lists.refresh();
    }
    return { added: valid.length, problems };
  }

  /** Removes entries; the unknown ones are reported. */
  async removeEntries(keys: readonly EntryKey[]): Promise<{ removed: number; problems: EntryProblem[] }> {
    const problems: EntryProblem[] = [];
    const normalised: EntryKey[] = [];
    keys.forEach((key, index) => {
      const value = normaliseEntryValue(key.kind, key.value);
      if (typeof value !== "string") problems.push({ index, value: key.value, problem: value.error });
      else normalised.push({ kind: key.kind, value });
    });
    let removed = 0;
    for (const [index, key] of normalised.entries()) {
      const count = await this.deps.store.removeEntries([key]);
      if (count === 0) problems.push({ index, value: key.value, problem: `no ${key.kind} entry "${key.value}"` });
      removed += count;
    }
    await this.deps.lists.refresh();
    return { removed, problems };
  }

  /** What Check would answer now, and why; changes nothing. */
  async explain(request: CheckRequest): Promise<Explanation> {
    const valid = this.valid(request);
    const query = this.deps.engine.query(valid);
    const inspection = await this.deps.store.inspect(query);
    const base = {
      query,
      firstSeenMs: inspection.triplet?.firstSeenMs ?? 0,
      passedMs: inspection.triplet?.passedMs ?? 0,
      lastSeenMs: inspection.triplet?.lastSeenMs ?? 0,
      clientPasses: inspection.client?.passes ?? 0,
    };
    const rules = applyRules(valid, this.deps.lists.current, this.deps.engine.ruleSettings, inspection.nowMs);
    if (rules.kind !== "greylist") {
      const why = rules.kind === "greytrap" ? "the recipient is a greytrap" : describeReason(rules.response.reason);
      return { ...base, response: rules.response, explanation: `decided before the greylist: ${why}` };
    }
    let outcome: StoreOutcome;
    if (inspection.blockedUntilMs > 0) outcome = { kind: "network_blocked" };
    else if (query.outbound && inspection.outbound) outcome = { kind: "outbound_reply" };
    else
      outcome = verdict(
        inspection.triplet,
        inspection.client,
        inspection.nowMs,
        this.deps.policy,
        query.singleUse,
      ).outcome;
    return {
      ...base,
      response: this.deps.engine.answer(outcome, inspection.nowMs),
      explanation: describeOutcome(outcome, inspection.blockedUntilMs),
    };
  }

  /** Forgets one triplet. */
  deleteTriplet(request: CheckRequest): Promise<boolean> {
    return this.deps.store.deleteTriplet(this.deps.engine.query(this.valid(request)));
  }

  /** Forgets a client network; `address` is any address in it. */
  async flushNetwork(address: string): Promise<{ network: string; removed: number }> {
    const [text, prefix] = address.split("/");
    const ip = parseIp(text ?? "");
    if (!ip)
      throw new GreyfleetError("invalid_argument", `client_address ${JSON.stringify(address)} is not an address`);
    const network = clientNetwork(ip, this.deps.grouping);
    // State is kept per grouping network: a wider or narrower prefix would flush something else
    // than it says.
    const grouped = ip.family === 4 ? this.deps.grouping.ipv4PrefixLength : this.deps.grouping.ipv6PrefixLength;
    if (prefix !== undefined && prefix !== String(grouped)) {
      throw new GreyfleetError(
        "invalid_argument",
        `${JSON.stringify(address)}: state is kept per /${grouped} network; give an address or ${network}`,
      );
    }
    return { network, removed: await this.deps.store.flushNetwork(network) };
  }

  /** Counts of the state and of the lists in force. */
  async stats(): Promise<StoreStats & { lists: Record<ListKindName, number> }> {
    const counts = await this.deps.store.stats(this.deps.policy.autoWhitelistPasses);
    return { ...counts, lists: this.deps.lists.current.sizes(Date.now()) };
  }

  /** Every record of the state. */
  exportRecords(): AsyncIterable<StateRecord> {
    return this.deps.store.exportRecords();
  }

  /**
   * Writes records; list entries are applied at once. Entries are checked and normalised as
   * AddEntries does them, and times must be plausible: a bad record stops the import there,
   * naming it.
   */
  async importRecords(records: AsyncIterable<StateRecord>): Promise<ImportResult> {
    const result = await this.deps.store.importRecords(checkedRecords(records));
    await this.deps.lists.refresh();
    return result;
  }

  private valid(request: CheckRequest): ValidCheck {
    const valid = validateCheck(request);
    if (isInvalid(valid)) throw new GreyfleetError("invalid_argument", valid.message);
    return valid;
  }
}

/** What AddEntries and a restore check of an entry: its stored (normalised) value, or the problem. */
function checkEntry(
  entry: ListEntryValue,
): { readonly value: string } | { readonly field: "value" | "other"; readonly problem: string } {
  const value = normaliseEntryValue(entry.kind, entry.value);
  if (typeof value !== "string") return { field: "value", problem: value.error };
  // Comment and source are printed by `admin list`: bounded, and no terminal escapes.
  for (const [name, text] of [
    ["comment", entry.comment],
    ["source", entry.source],
  ] as const) {
    if (Buffer.byteLength(text) > MAX_NOTE_BYTES) {
      return { field: "other", problem: `${name} is longer than ${MAX_NOTE_BYTES} bytes` };
    }
    if (CONTROL_CHARACTER.test(text)) return { field: "other", problem: `${name} has a control character` };
  }
  // An entry is exported as it is stored, and a restore takes times up to LATEST_TIME_MS only.
  if (!Number.isSafeInteger(entry.expiresAtMs) || entry.expiresAtMs < 0 || entry.expiresAtMs > LATEST_TIME_MS) {
    return { field: "other", problem: "expires later than the year 2200 (or is not a time)" };
  }
  return { value };
}

/** `records` with each checked: list entries as AddEntries checks them, times in range. */
async function* checkedRecords(records: AsyncIterable<StateRecord>): AsyncIterable<StateRecord> {
  let index = 0;
  for await (const record of records) {
    index++;
    const refuse = (problem: string) => new GreyfleetError("invalid_argument", `record ${index}: ${problem}`);
    const timed: object = record.type === "entry" ? record.entry : record;
    for (const [name, value] of Object.entries(timed)) {
      if (!name.endsWith("Ms")) continue;
      if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value > LATEST_TIME_MS)
        throw refuse(`${name} ${String(value)} is not a time between 1970 and 2200`);
    }
    if (record.type !== "entry") {
      yield record;
      continue;
    }
    // An earlier version took any source (an import's was its whole file path): cut, not refused.
    const entry = { ...record.entry, source: truncateUtf8(record.entry.source, MAX_NOTE_BYTES) };
    const checked = checkEntry(entry);
    if ("problem" in checked) {
      throw refuse(
        checked.field === "value"
          ? `${entry.kind} ${JSON.stringify(entry.value)}: ${checked.problem}`
          : checked.problem,
      );
    }
    yield { type: "entry", entry: { ...entry, value: checked.value } };
  }
}

function describeReason(reason: Reason): string {
  switch (reason) {
    case Reason.REASON_CLIENT_BLACKLISTED:
      return "the client is on the blacklist";
    case Reason.REASON_AUTHENTICATED_CLIENT:
      return "the client authenticated: outgoing mail";
    case Reason.REASON_INTERNAL_CLIENT:
      return "the client is in an internal network: outgoing mail";
    case Reason.REASON_CLIENT_WHITELISTED:
      return "the client address is whitelisted";
    case Reason.REASON_CLIENT_NAME_WHITELISTED:
      return "the client host name is whitelisted";
    case Reason.REASON_SENDER_WHITELISTED:
      return "the sender is whitelisted";
    case Reason.REASON_RECIPIENT_OPTED_OUT:
      return "the recipient opted out";
    case Reason.REASON_RECIPIENT_NOT_OPTED_IN:
      return "opt-in mode, and the recipient did not opt in";
    case Reason.REASON_NULL_SENDER_DEFERRED_TO_DATA:
      return "the null sender is decided at DATA";
    default:
      return "greylisting happens at RCPT";
  }
}

function describeOutcome(outcome: StoreOutcome, blockedUntilMs: number): string {
  switch (outcome.kind) {
    case "new_triplet":
      return "unknown triplet (or its retry window passed): it would be recorded and deferred";
    case "too_early":
      return `seen, but the delay has not passed: ${Math.ceil(outcome.retryAfterMs / 1000)} s left`;
    case "passed_after_retry":
      return `retried after ${Math.floor(outcome.delayedMs / 1000)} s, within the retry window: it would pass`;
    case "known_triplet":
      return "passed before and used within max-age: accepted";
    case "client_auto_whitelisted":
      return "the client network is auto-whitelisted";
    case "network_blocked":
      return `the network hit a greytrap; blocked until ${new Date(blockedUntilMs).toISOString()}`;
    case "outbound_reply":
      return "a local user wrote to this sender: the reply is accepted";
  }
}
