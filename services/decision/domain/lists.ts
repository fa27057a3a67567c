/**
 * The greylisting lists, indexed for matching on every request; pure (the clock is a parameter).
 * Value forms are defined in ./lists-values; this module only decides what matches what:
 * - client addresses: longest prefix first, one Map per prefix length present (at most 33 / 129
 *   lookups, whatever the number of entries);
 * - client names, sender and recipient domains: one Map lookup per dot-separated suffix, then any
 *   regexes in entry order;
 * - recipients "bob+tag@example.com" also match entries for "bob@example.com" and "bob@" (the
 *   "+" recipient delimiter, Postfix's usual setting).
 * An entry whose expiresAtMs is not 0 and not after nowMs is out of force: it never matches and
 * is not counted.
 */
import type { IpAddress } from "./ip";
import { Expiries, MailIndex, NameIndex, NetworkIndex } from "./lists-index";
import { LIST_KIND_NAMES, type ListEntryValue, type ListKindName, parseEntryValue } from "./lists-values";
import { normaliseRecipient, normaliseSender } from "./normalise";

export {
  LATEST_TIME_MS,
  LIST_KIND_NAMES,
  type ListEntryValue,
  type ListKindName,
  MAX_NOTE_BYTES,
  normaliseEntryValue,
  truncateUtf8,
} from "./lists-values";

/** Longer names and addresses never match (they are not valid, and this bounds regex work). */
const MAX_MATCH_LENGTH = 512;

/** Every list, indexed; build a new one when the lists change (entries are not added later). */
export class Lists {
  private readonly networks = { client_whitelist: new NetworkIndex(), client_blacklist: new NetworkIndex() };
  private readonly names = new NameIndex();
  private readonly senders = new MailIndex();
  private readonly recipients = {
    recipient_opt_out: new MailIndex(),
    recipient_opt_in: new MailIndex(),
    greytrap: new MailIndex(),
  };
  private readonly expiries = Object.fromEntries(LIST_KIND_NAMES.map((kind) => [kind, new Expiries()])) as Record<
    ListKindName,
    Expiries
  >;

  /** Entries left out because their value is not valid for their kind; the caller must report them. */
  readonly invalid: readonly { readonly entry: ListEntryValue; readonly problem: string }[];

  /**
   * Indexes `entries`, which should hold values from normaliseEntryValue. An invalid one (a bug,
   * or a store written by another version) is left out and listed in `invalid`, so one bad
   * entry does not stop every other list change from applying.
   */
  constructor(entries: readonly ListEntryValue[]) {
    const invalid: { entry: ListEntryValue; problem: string }[] = [];
    for (const entry of entries) {
      const parsed = parseEntryValue(entry.kind, entry.value);
      if ("error" in parsed) {
        invalid.push({ entry, problem: parsed.error });
        continue;
      }
      this.expiries[entry.kind].add(entry.expiresAtMs);
      if (entry.kind === "client_whitelist" || entry.kind === "client_blacklist") {
        if (parsed.form === "network") this.networks[entry.kind].add(parsed.address, parsed.prefixLength, entry);
      } else if (entry.kind === "client_name_whitelist") this.names.add(parsed, entry);
      else if (entry.kind === "sender_whitelist") this.senders.add(parsed, entry);
      else this.recipients[entry.kind].add(parsed, entry);
    }
    for (const kind of LIST_KIND_NAMES) this.expiries[kind].seal();
    this.networks.client_whitelist.seal();
    this.networks.client_blacklist.seal();
    this.invalid = invalid;
  }

  /** The first matching unexpired entry for a client address (longest prefix first), or undefined. */
  client(kind: "client_whitelist" | "client_blacklist", address: IpAddress, nowMs: number): ListEntryValue | undefined {
    return this.networks[kind].find(address, nowMs);
  }

  /** The client_name_whitelist entry for a verified client name; "", "unknown" and "[address]" never match. */
  clientName(name: string, nowMs: number): ListEntryValue | undefined {
    if (this.names.empty) return undefined;
    let host = name.toLowerCase();
    if (host.endsWith(".")) host = host.slice(0, -1);
    if (host === "" || host === "unknown" || host.startsWith("[") || host.length > MAX_MATCH_LENGTH) return undefined;
    return this.names.find(host, nowMs);
  }

  /**
   * The sender_whitelist entry for an envelope sender (raw or lower case, <brackets> allowed).
   * Addresses match as given or as normaliseSender keys them (BATV tag and +extension removed);
   * "example.org" matches senders at that domain only, ".example.org" at its subdomains.
   * The null sender never matches.
   */
  sender(sender: string, nowMs: number): ListEntryValue | undefined {
    if (this.senders.empty) return undefined;
    const address = normaliseRecipient(sender); // brackets removed, lower case: nothing else
    const at = address.lastIndexOf("@");
    if (at <= 0 || address.length > MAX_MATCH_LENGTH) return undefined;
    const keyed = normaliseSender(address);
    return (
      this.senders.address(address, nowMs) ??
      (keyed !== address ? this.senders.address(keyed, nowMs) : undefined) ??
      this.senders.domain(address.slice(at + 1), nowMs)
    );
  }

  /** The entry of a recipient list for an envelope recipient, trying it also without its +extension. */
  recipient(
    kind: "recipient_opt_out" | "recipient_opt_in" | "greytrap",
    recipient: string,
    nowMs: number,
  ): ListEntryValue | undefined {
    const index = this.recipients[kind];
    if (index.empty) return undefined;
    const address = normaliseRecipient(recipient);
    if (address === "" || address.length > MAX_MATCH_LENGTH) return undefined;
    const at = address.lastIndexOf("@");
    const local = at === -1 ? address : address.slice(0, at);
    const domain = at === -1 ? "" : address.slice(at + 1);
    const plus = local.indexOf("+");
    const base = plus > 0 ? local.slice(0, plus) : local;
    return (
      (domain !== "" ? index.address(address, nowMs) : undefined) ??
      (domain !== "" && base !== local ? index.address(`${base}@${domain}`, nowMs) : undefined) ??
      index.local(local, nowMs) ??
      (base !== local ? index.local(base, nowMs) : undefined) ??
      index.domain(domain, nowMs) ??
      index.regex(address, nowMs)
    );
  }

  /** Entries in force by kind. */
  sizes(nowMs: number): Record<ListKindName, number> {
    return Object.fromEntries(LIST_KIND_NAMES.map((kind) => [kind, this.expiries[kind].count(nowMs)])) as Record<
      ListKindName,
      number
    >;
  }

  /** True if the kind has at least one unexpired entry (for opt-in mode). */
  has(kind: ListKindName, nowMs: number): boolean {
    return this.expiries[kind].count(nowMs) > 0;
  }
}
