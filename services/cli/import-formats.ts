/**
 * Readers of the classic whitelist file formats, and of the shipped default whitelist; pure:
 * text in, entries and per-line problems out. Never throws. Every value goes through
 * normaliseEntryValue, so what is imported is what the admin API would have accepted.
 */
import { type ListKindName, MAX_NOTE_BYTES, normaliseEntryValue, truncateUtf8 } from "../decision/domain/lists";

/** One entry read from a file; `line` is 1-based. */
export interface ImportedEntry {
  kind: ListKindName;
  value: string;
  comment: string;
  line: number;
}

/** A line that was not imported, and why; `text` is the line cut to 100 characters. */
export interface LineProblem {
  line: number;
  text: string;
  problem: string;
}

/** What a file gave: the entries to add and the lines left out. */
export interface ImportResult {
  entries: ImportedEntry[];
  problems: LineProblem[];
}

/**
 * The formats read:
 * - "postgrey-clients": postgrey whitelist_clients (addresses, CIDRs, partial IPv4, host names, /regex/);
 * - "postgrey-recipients": postgrey whitelist_recipients, read as recipient_opt_out;
 * - "ip-prefixes": relaydelay-style lists, one address, CIDR or partial IPv4 prefix per line.
 */
export type ImportFormat = "postgrey-clients" | "postgrey-recipients" | "ip-prefixes";

/** Every import format, for option parsing. */
export const IMPORT_FORMATS: readonly ImportFormat[] = Object.freeze([
  "postgrey-clients",
  "postgrey-recipients",
  "ip-prefixes",
]);

/** The `source` to give entries of the shipped default whitelist. */
export const DEFAULT_WHITELIST_SOURCE = "default";
/** Most entries read from one text, the admin API's limit for one AddEntries call. */
export const MAX_IMPORT_ENTRIES = 100_000;
/** After this many problems the rest of the text is not read (it is probably not a list). */
export const MAX_IMPORT_PROBLEMS = 1_000;
/** Longer lines are refused unread. */
export const MAX_LINE_LENGTH = 1_000;
const PROBLEM_TEXT_LENGTH = 100;

type Candidate = { kind: ListKindName; value: string };
/** The entries one line's value stands for (at least one), or why it stands for none. */
type LineReader = (content: string, comment: string) => Candidate[] | { error: string };

/** Reads a list file in one of the classic formats; lines it cannot use become problems. */
export function parseImport(format: ImportFormat, text: string): ImportResult {
  switch (format) {
    case "postgrey-clients":
      return readLines(text, single(postgreyClient));
    case "postgrey-recipients":
      return readLines(text, single(postgreyRecipient));
    case "ip-prefixes":
      return readLines(
        text,
        single((value) => [{ kind: "client_whitelist", value }]),
      );
    default:
      return { entries: [], problems: [{ line: 0, text: "", problem: `unknown import format ${String(format)}` }] };
  }
}

/**
 * Reads the shipped default whitelist: `<kind> <value>  # <where it comes from>` per line, kind
 * client_name_whitelist or client_whitelist; the comment is required and becomes the entry's
 * comment. Give the entries source DEFAULT_WHITELIST_SOURCE.
 */
export function parseDefaultWhitelist(text: string): ImportResult {
  return readLines(text, (content, comment) => {
    const [kind, value, ...rest] = content.split(/\s+/);
    if (kind !== "client_name_whitelist" && kind !== "client_whitelist") {
      return { error: 'the line must start with "client_name_whitelist" or "client_whitelist"' };
    }
    if (value === undefined || rest.length > 0) return { error: "expected <kind> <value>  # <source>" };
    if (comment === "") return { error: 'the entry has no "# source" saying where it comes from' };
    return [{ kind, value }];
  });
}

/** A reader for the formats with exactly one value per line. */
function single(entriesOf: (value: string) => Candidate[]): LineReader {
  return (content) =>
    /\s/.test(content) ? { error: "more than one value on the line (a comment starts with #)" } : entriesOf(content);
}

/** Digits and dots (an address or partial IPv4 prefix, maybe with /len) or a colon (IPv6) is a client address. */
function postgreyClient(value: string): Candidate[] {
  const address = /^[0-9.]+(?:\/.*)?$/.test(value) || (value.includes(":") && !value.startsWith("/"));
  return [{ kind: address ? "client_whitelist" : "client_name_whitelist", value }];
}

/**
 * postgrey matches a bare recipient domain at that domain and its subdomains, which here takes
 * two entries: "example.com" (the domain only) and ".example.com" (its subdomains).
 */
function postgreyRecipient(value: string): Candidate[] {
  const bareDomain = !value.includes("@") && !value.startsWith("/") && !value.startsWith(".");
  const entries: Candidate[] = [{ kind: "recipient_opt_out", value }];
  if (bareDomain) entries.push({ kind: "recipient_opt_out", value: `.${value}` });
  return entries;
}

/** Entries so far, and the line where each kind+value was first seen. */
interface ReadState {
  readonly entries: ImportedEntry[];
  readonly firstLines: Map<string, number>;
}

function readLines(text: string, read: LineReader): ImportResult {
  const state: ReadState = { entries: [], firstLines: new Map() };
  const problems: LineProblem[] = [];
  const body = text.startsWith("\uFEFF") ? text.slice(1) : text;
  let start = 0;
  for (let line = 1; start <= body.length; line++) {
    const newline = body.indexOf("\n", start);
    const end = newline === -1 ? body.length : newline;
    const raw = body.slice(start, end > start && body[end - 1] === "\r" ? end - 1 : end);
    start = end + 1;
    const problem = readLine(raw, line, read, state);
    if (problem === undefined) continue;
    problems.push({ line, text: raw.slice(0, PROBLEM_TEXT_LENGTH), problem });
    if (problems.length >= MAX_IMPORT_PROBLEMS && start <= body.length) {
      problems.push({
        line: line + 1,
        text: "",
        problem: `more than ${MAX_IMPORT_PROBLEMS} problems; the rest was not read`,
      });
      break;
    }
  }
  return { entries: state.entries, problems };
}

/** Adds the entries of one line to `state`, all or none; returns the problem, if any. */
function readLine(raw: string, line: number, read: LineReader, state: ReadState): string | undefined {
  if (raw.length > MAX_LINE_LENGTH) return `line longer than ${MAX_LINE_LENGTH} characters`;
  const hash = raw.indexOf("#");
  const content = (hash === -1 ? raw : raw.slice(0, hash)).trim();
  if (content === "") return undefined;
  const comment = hash === -1 ? "" : truncateUtf8(raw.slice(hash + 1).trim(), MAX_NOTE_BYTES);
  const candidates = read(content, comment);
  if ("error" in candidates) return candidates.error;
  const found: ImportedEntry[] = [];
  for (const { kind, value } of candidates) {
    const canonical = normaliseEntryValue(kind, value);
    if (typeof canonical !== "string") return canonical.error;
    const first = state.firstLines.get(`${kind} ${canonical}`);
    if (first !== undefined) return `the same entry as line ${first} (${kind} ${canonical})`;
    found.push({ kind, value: canonical, comment, line });
  }
  if (state.entries.length + found.length > MAX_IMPORT_ENTRIES) {
    return `more than ${MAX_IMPORT_ENTRIES} entries; this line was not read`;
  }
  for (const entry of found) {
    state.firstLines.set(`${entry.kind} ${entry.value}`, line);
    state.entries.push(entry);
  }
  return undefined;
}
