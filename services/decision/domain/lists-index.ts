/**
 * The index structures behind Lists; pure. Each answers "the first entry in force for this
 * key" without scanning the entries: networks by prefix length then network bits, names and
 * domains by exact text (so a lookup walks the dot-separated suffixes), regexes in entry order.
 */
import type { IpAddress } from "./ip";
import type { ListRegex } from "./list-regex";
import type { ListEntryValue, ParsedEntryValue } from "./lists-values";

type Bucket<K> = Map<K, ListEntryValue[]>;

/** An entry applies at nowMs if it never expires or expires after nowMs. */
function inForce(entry: ListEntryValue, nowMs: number): boolean {
  return entry.expiresAtMs === 0 || entry.expiresAtMs > nowMs;
}

function push<K>(bucket: Bucket<K>, key: K, entry: ListEntryValue): void {
  const entries = bucket.get(key);
  if (entries) entries.push(entry);
  else bucket.set(key, [entry]);
}

function firstInForce(entries: readonly ListEntryValue[] | undefined, nowMs: number): ListEntryValue | undefined {
  if (entries) for (const entry of entries) if (inForce(entry, nowMs)) return entry;
  return undefined;
}

interface RegexEntry {
  readonly regex: ListRegex;
  readonly entry: ListEntryValue;
}

function firstRegex(regexes: readonly RegexEntry[], text: string, nowMs: number): ListEntryValue | undefined {
  for (const { regex, entry } of regexes) if (inForce(entry, nowMs) && regex.test(text)) return entry;
  return undefined;
}

/** The address as one number (IPv4) or bigint (IPv6); the network key for length L is its top L bits. */
function ipv4Number(bytes: Uint8Array): number {
  return (((bytes[0] ?? 0) << 24) | ((bytes[1] ?? 0) << 16) | ((bytes[2] ?? 0) << 8) | (bytes[3] ?? 0)) >>> 0;
}

function ipv6Number(bytes: Uint8Array): bigint {
  let value = 0n;
  for (let i = 0; i < 16; i++) value = (value << 8n) | BigInt(bytes[i] ?? 0);
  return value;
}

const v4Key = (address: number, length: number): number => (length === 0 ? 0 : address >>> (32 - length));
const v6Key = (address: bigint, length: number): bigint => address >> BigInt(128 - length);

/** Networks by prefix length, then by network bits. */
export class NetworkIndex {
  private readonly v4 = new Map<number, Bucket<number>>();
  private readonly v6 = new Map<number, Bucket<bigint>>();
  private v4Lengths: number[] = [];
  private v6Lengths: number[] = [];

  add(address: IpAddress, length: number, entry: ListEntryValue): void {
    if (address.family === 4) {
      const bucket = this.v4.get(length) ?? new Map<number, ListEntryValue[]>();
      this.v4.set(length, bucket);
      push(bucket, v4Key(ipv4Number(address.bytes), length), entry);
    } else {
      const bucket = this.v6.get(length) ?? new Map<bigint, ListEntryValue[]>();
      this.v6.set(length, bucket);
      push(bucket, v6Key(ipv6Number(address.bytes), length), entry);
    }
  }

  /** Call once after the last add: the prefix lengths present, longest first. */
  seal(): void {
    this.v4Lengths = [...this.v4.keys()].sort((a, b) => b - a);
    this.v6Lengths = [...this.v6.keys()].sort((a, b) => b - a);
  }

  find(address: IpAddress, nowMs: number): ListEntryValue | undefined {
    if (address.family === 4) {
      const value = ipv4Number(address.bytes);
      for (const length of this.v4Lengths) {
        const hit = firstInForce(this.v4.get(length)?.get(v4Key(value, length)), nowMs);
        if (hit) return hit;
      }
      return undefined;
    }
    const value = ipv6Number(address.bytes);
    for (const length of this.v6Lengths) {
      const hit = firstInForce(this.v6.get(length)?.get(v6Key(value, length)), nowMs);
      if (hit) return hit;
    }
    return undefined;
  }
}

/** Client host names: "example.com" matches it and its subdomains, ".example.com" only subdomains. */
export class NameIndex {
  private readonly names: Bucket<string> = new Map();
  private readonly regexes: RegexEntry[] = [];

  add(parsed: ParsedEntryValue, entry: ListEntryValue): void {
    if (parsed.form === "regex") this.regexes.push({ regex: parsed.regex, entry });
    else push(this.names, parsed.canonical, entry);
  }

  /** No entry at all: nothing can match (lookups run on every request). */
  get empty(): boolean {
    return this.names.size === 0 && this.regexes.length === 0;
  }

  find(name: string, nowMs: number): ListEntryValue | undefined {
    let hit = firstInForce(this.names.get(name), nowMs);
    for (let dot = name.indexOf("."); !hit && dot !== -1; dot = name.indexOf(".", dot + 1)) {
      hit =
        firstInForce(this.names.get(name.slice(dot)), nowMs) ??
        firstInForce(this.names.get(name.slice(dot + 1)), nowMs);
    }
    return hit ?? firstRegex(this.regexes, name, nowMs);
  }
}

/** Mail addresses: whole addresses, local parts ("postmaster@"), domains and subdomains, regexes. */
export class MailIndex {
  private readonly addresses: Bucket<string> = new Map();
  private readonly locals: Bucket<string> = new Map();
  /** "example.com" (that domain only) and ".example.com" (its subdomains). */
  private readonly domains: Bucket<string> = new Map();
  private readonly regexes: RegexEntry[] = [];

  add(parsed: ParsedEntryValue, entry: ListEntryValue): void {
    if (parsed.form === "regex") this.regexes.push({ regex: parsed.regex, entry });
    else if (parsed.form === "address") push(this.addresses, parsed.canonical, entry);
    else if (parsed.form === "local") push(this.locals, parsed.canonical, entry);
    else push(this.domains, parsed.canonical, entry);
  }

  /** No entry at all: nothing can match (lookups run on every request). */
  get empty(): boolean {
    return this.addresses.size + this.locals.size + this.domains.size + this.regexes.length === 0;
  }

  address(address: string, nowMs: number): ListEntryValue | undefined {
    return firstInForce(this.addresses.get(address), nowMs);
  }

  local(local: string, nowMs: number): ListEntryValue | undefined {
    return firstInForce(this.locals.get(`${local}@`), nowMs);
  }

  domain(domain: string, nowMs: number): ListEntryValue | undefined {
    if (domain === "") return undefined;
    let hit = firstInForce(this.domains.get(domain), nowMs);
    for (let dot = domain.indexOf("."); !hit && dot !== -1; dot = domain.indexOf(".", dot + 1)) {
      hit = firstInForce(this.domains.get(domain.slice(dot)), nowMs);
    }
    return hit;
  }

  regex(text: string, nowMs: number): ListEntryValue | undefined {
    return firstRegex(this.regexes, text, nowMs);
  }
}

/** Expiry times of one kind, for counting entries in force without scanning them. */
export class Expiries {
  private permanent = 0;
  private readonly timed: number[] = [];

  add(expiresAtMs: number): void {
    if (expiresAtMs === 0) this.permanent++;
    else this.timed.push(expiresAtMs);
  }

  seal(): void {
    this.timed.sort((a, b) => a - b);
  }

  count(nowMs: number): number {
    let low = 0;
    let high = this.timed.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if ((this.timed[mid] ?? 0) > nowMs) high = mid;
      else low = mid + 1;
    }
    return this.permanent + this.timed.length - low;
  }
}
