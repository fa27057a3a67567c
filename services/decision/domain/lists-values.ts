/**
 * List kinds and the value forms each accepts; pure. Every value is checked and put in one
 * canonical form here, both when it is added (admin API, importers) and when the lists are
 * indexed, so what is stored is exactly what is matched.
 */
import { formatIp, type IpAddress, maskIp, parseIp } from "./ip";
import { compileListRegex, type ListRegex } from "./list-regex";

/** The list kinds, as named in proto/greyfleet/v1/admin.proto (ListKind without the prefix). */
export type ListKindName =
  | "client_whitelist"
  | "client_name_whitelist"
  | "sender_whitelist"
  | "recipient_opt_out"
  | "recipient_opt_in"
  | "client_blacklist"
  | "greytrap";

/** Every list kind, in the order of the ListKind enum values 1..7. */
export const LIST_KIND_NAMES: readonly ListKindName[] = Object.freeze([
  "client_whitelist",
  "client_name_whitelist",
  "sender_whitelist",
  "recipient_opt_out",
  "recipient_opt_in",
  "client_blacklist",
  "greytrap",
]);

/** One list entry as the domain sees it; `value` is canonical (see normaliseEntryValue). */
export interface ListEntryValue {
  readonly kind: ListKindName;
  readonly value: string;
  /** epoch ms, 0 = never */
  readonly expiresAtMs: number;
  readonly comment: string;
  readonly source: string;
  readonly createdAtMs: number;
}

/** A value taken apart for indexing; `canonical` is the stored text. */
export type ParsedEntryValue =
  | { readonly form: "network"; readonly canonical: string; readonly address: IpAddress; readonly prefixLength: number }
  /** "example.com": for client names that domain and its subdomains; for senders and recipients that domain only. */
  | { readonly form: "domain"; readonly canonical: string }
  /** ".example.com": strict subdomains of example.com. */
  | { readonly form: "subdomains"; readonly canonical: string }
  | { readonly form: "address"; readonly canonical: string }
  /** "postmaster@": that local part at any domain. */
  | { readonly form: "local"; readonly canonical: string }
  | { readonly form: "regex"; readonly canonical: string; readonly regex: ListRegex };

/** Longest value accepted, in characters (before trimming). */
export const MAX_VALUE_LENGTH = 255;
/** Longest /regex/ accepted, slashes included. */
export const MAX_REGEX_LENGTH = 200;
/** Longest comment and source of an entry, UTF-8 bytes (both are printed by `admin list`). */
export const MAX_NOTE_BYTES = 200;
/** Latest time an entry may expire, or any stored record name: the year 2200, epoch ms. */
export const LATEST_TIME_MS = Date.UTC(2200, 0, 1);
const MAX_DOMAIN_LENGTH = 253;

type Result = ParsedEntryValue | { error: string };

/** Canonical form of a value for its kind, or an error message naming what is wrong. */
export function normaliseEntryValue(kind: ListKindName, value: string): string | { error: string } {
  const parsed = parseEntryValue(kind, value);
  return "error" in parsed ? parsed : parsed.canonical;
}

/**
 * Checks and takes apart a value. Surrounding whitespace is trimmed; everything is lower-cased
 * except /regex/ values, which are kept as written (lower-casing would turn \D into \d) and
 * always match case-insensitively.
 */
export function parseEntryValue(kind: ListKindName, value: string): ParsedEntryValue | { error: string } {
  if (typeof value !== "string") return { error: "the value is not text" };
  if (value.length > MAX_VALUE_LENGTH) return { error: `longer than ${MAX_VALUE_LENGTH} characters` };
  const trimmed = value.trim();
  if (trimmed === "") return { error: "empty value" };
  if (/[\s\p{Cc}\p{Cf}]/u.test(trimmed)) return { error: "contains whitespace or a control character" };
  switch (kind) {
    case "client_whitelist":
    case "client_blacklist":
      return parseNetwork(trimmed.toLowerCase());
    case "client_name_whitelist":
      return parseClientName(trimmed);
    case "sender_whitelist":
      return parseSender(trimmed.toLowerCase());
    case "recipient_opt_out":
    case "recipient_opt_in":
      return trimmed.startsWith("/") ? parseRegex(trimmed) : parseRecipient(trimmed.toLowerCase());
    case "greytrap":
      return parseGreytrap(trimmed.toLowerCase());
    default:
      return { error: `unknown list kind ${JSON.stringify(kind)}` };
  }
}

const DECIMAL = /^(?:0|[1-9][0-9]{0,2})$/;

/** Address, CIDR (host bits are cleared: "192.0.2.77/24" becomes "192.0.2.0/24") or partial IPv4. */
function parseNetwork(text: string): Result {
  const slash = text.indexOf("/");
  if (slash === -1) {
    const address = parseIp(text);
    if (address) return network(address, address.family === 4 ? 32 : 128);
    return parsePartialIpv4(text);
  }
  const addressText = text.slice(0, slash);
  const lengthText = text.slice(slash + 1);
  const address = parseIp(addressText);
  if (!address) {
    return {
      error: `"${addressText}" is not a full IPv4 or IPv6 address; a CIDR is written like 192.0.2.0/24 or 2001:db8::/32`,
    };
  }
  if (!DECIMAL.test(lengthText)) return { error: `prefix length "${lengthText}" is not a number` };
  let length = Number(lengthText);
  if (address.family === 4 && addressText.includes(":")) {
    // An IPv4-mapped IPv6 network (::ffff:192.0.2.0/120) is the IPv4 network it maps.
    if (length < 96) return { error: `prefix length ${length} of an IPv4-mapped network is less than 96` };
    length -= 96;
  }
  const max = address.family === 4 ? 32 : 128;
  if (length > max) return { error: `prefix length ${length} is more than ${max} for IPv${address.family}` };
  if (length === 0) return { error: "prefix length 0 would match every address" };
  return network(address, length);
}

/** "10" = 10.0.0.0/8, "129.74" = 129.74.0.0/16, "192.74.137" = /24; a trailing dot is allowed. */
function parsePartialIpv4(text: string): Result {
  const parts = (text.endsWith(".") ? text.slice(0, -1) : text).split(".");
  const notAddress = { error: "not an IP address, CIDR or partial IPv4 prefix (like 192.0.2 or 10.1)" };
  if (parts.length > 3 || !parts.every((part) => /^[0-9]+$/.test(part))) return notAddress;
  const bytes = new Uint8Array(4);
  for (const [i, part] of parts.entries()) {
    if (!DECIMAL.test(part) || Number(part) > 255)
      return { error: `"${part}" is not an octet (0-255, no leading zero)` };
    bytes[i] = Number(part);
  }
  return network({ family: 4, bytes }, 8 * parts.length);
}

function network(address: IpAddress, prefixLength: number): ParsedEntryValue {
  const masked = maskIp(address, prefixLength);
  return { form: "network", canonical: `${formatIp(masked)}/${prefixLength}`, address: masked, prefixLength };
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Why `domain` is not a host name, or undefined. `minLabels` 2 refuses whole top-level domains. */
function domainProblem(domain: string, minLabels: number): string | undefined {
  if (domain.length > MAX_DOMAIN_LENGTH) return `domain longer than ${MAX_DOMAIN_LENGTH} characters`;
  const labels = domain.split(".");
  for (const label of labels) {
    if (label === "") return `"${domain}" has an empty label (a leading, trailing or double dot)`;
    if (!LABEL.test(label)) {
      return `"${label}" is not a host name label (letters, digits, "-" and "_", at most 63; IDNs as xn--)`;
    }
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? "")) return `"${domain}" looks like an IP address, not a name`;
  if (labels.length < minLabels) return `"${domain}" is a single label; it would match a whole top-level domain`;
  return undefined;
}

function parseRegex(text: string): Result {
  if (text.length < 3 || !text.endsWith("/")) {
    return { error: "a regex is written /pattern/ without flags (it always matches case-insensitively)" };
  }
  if (text.length > MAX_REGEX_LENGTH) return { error: `regex longer than ${MAX_REGEX_LENGTH} characters` };
  const compiled = compileListRegex(text.slice(1, -1));
  return "error" in compiled ? compiled : { form: "regex", canonical: text, regex: compiled.regex };
}

/** ".example.com", "example.com" (also "*.example.com" = ".example.com"; a trailing dot is dropped) or /regex/. */
function parseClientName(text: string): Result {
  if (text.startsWith("/")) return parseRegex(text);
  let name = text.toLowerCase();
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (name.startsWith("*.")) name = name.slice(1);
  const subdomains = name.startsWith(".");
  const domain = subdomains ? name.slice(1) : name;
  const problem = domainProblem(domain, 2);
  if (problem) return { error: problem };
  return subdomains ? { form: "subdomains", canonical: `.${domain}` } : { form: "domain", canonical: domain };
}

/** Splits "local@domain"; "<...>" around it is removed. */
function splitAddress(text: string): { local: string; domain: string; at: boolean } | { error: string } {
  const address = text.startsWith("<") && text.endsWith(">") ? text.slice(1, -1) : text;
  if (address === "") return { error: "the null sender <> cannot be listed" };
  const at = address.indexOf("@");
  if (at !== address.lastIndexOf("@")) return { error: "more than one @" };
  if (at === -1) return { local: "", domain: address, at: false };
  return { local: address.slice(0, at), domain: address.slice(at + 1), at: true };
}

function parseAddress(local: string, domain: string): Result {
  const problem = domainProblem(domain, 1);
  return problem ? { error: problem } : { form: "address", canonical: `${local}@${domain}` };
}

/** A bare domain: "example.com" (that domain only) or ".example.com" (its subdomains). */
function parseMailDomain(domain: string): Result {
  const subdomains = domain.startsWith(".");
  const bare = subdomains ? domain.slice(1) : domain;
  const problem = domainProblem(bare, 2);
  if (problem) return { error: problem };
  return subdomains ? { form: "subdomains", canonical: `.${bare}` } : { form: "domain", canonical: bare };
}

/** "news@example.org", "example.org" (that domain only), ".example.org" (subdomains); "@example.org" = "example.org". */
function parseSender(text: string): Result {
  if (text.startsWith("/")) return { error: "a sender entry is an address or a domain; regexes are not accepted" };
  const parts = splitAddress(text);
  if ("error" in parts) return parts;
  if (parts.at && parts.domain === "") return { error: "a sender entry is an address or a domain, not a local part" };
  if (parts.local === "") return parseMailDomain(parts.domain);
  return parseAddress(parts.local, parts.domain);
}

/** "user@example.com", "postmaster@" (any domain), "example.com", ".example.com"; "@example.com" = "example.com". */
function parseRecipient(text: string): Result {
  const parts = splitAddress(text);
  if ("error" in parts) return parts;
  if (parts.at && parts.local === "" && parts.domain === "") return { error: '"@" alone is not an address' };
  if (parts.at && parts.domain === "") return { form: "local", canonical: `${parts.local}@` };
  if (parts.local === "") return parseMailDomain(parts.domain);
  return parseAddress(parts.local, parts.domain);
}

/** Full addresses only: a greytrap domain or local part would block clients that write to real mailboxes. */
function parseGreytrap(text: string): Result {
  const parts = splitAddress(text);
  if ("error" in parts) return parts;
  if (parts.local === "" || parts.domain === "" || text.startsWith("/")) {
    return {
      error:
        "a greytrap must be a full address (user@example.com); a domain, local part or regex would " +
        "block the networks of normal senders",
    };
  }
  return parseAddress(parts.local, parts.domain);
}

/** `text` cut to at most `maxBytes` of UTF-8, at a character boundary. */
export function truncateUtf8(text: string, maxBytes: number): string {
  let bytes = 0;
  let end = 0;
  for (const char of text) {
    const code = char.codePointAt(0) ?? 0;
    bytes += code < 0x80 ? 1 : code < 0x800 ? 2 : code < 0x10000 ? 3 : 4;
    if (bytes > maxBytes) break;
    end += char.length;
  }
  return text.slice(0, end);
}
