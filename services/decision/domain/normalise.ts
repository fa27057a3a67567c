/**
 * Normalisation of greylisting keys; pure. Retries of one message must map to one triplet even
 * when the sender's MTA rewrites its envelope sender per attempt (BATV, SRS, VERP) or retries
 * from another host of its pool (client network grouping).
 */
import { formatIp, type IpAddress, maskIp } from "./ip";

/** Prefix lengths that group client addresses into networks. */
export interface NetworkGrouping {
  /** IPv4 prefix length in bits (default 24). */
  readonly ipv4PrefixLength: number;
  /** IPv6 prefix length in bits (default 64). */
  readonly ipv6PrefixLength: number;
}

/** The client network an address belongs to, e.g. "192.0.2.0/24" or "2001:db8:0:0:0:0:0:0/64". */
export function clientNetwork(address: IpAddress, grouping: NetworkGrouping): string {
  const client = nat64Client(address) ?? address;
  const prefix = client.family === 4 ? grouping.ipv4PrefixLength : grouping.ipv6PrefixLength;
  return `${formatIp(maskIp(client, prefix))}/${prefix}`;
}

/** RFC 6052's well-known NAT64 prefix, 64:ff9b::/96. */
const NAT64_PREFIX = [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];

/**
 * The IPv4 client a translated address (64:ff9b::/96) carries in its last 32 bits. Grouped by
 * its /64, every IPv4 client of an MX behind such a translator would be one network: one pass
 * would count for all of them, and one greytrap hit would block them all.
 */
function nat64Client(address: IpAddress): IpAddress | undefined {
  if (address.family !== 6 || !NAT64_PREFIX.every((byte, i) => address.bytes[i] === byte)) return undefined;
  return { family: 4, bytes: address.bytes.slice(12) };
}

function stripAngles(address: string): string {
  return address.startsWith("<") && address.endsWith(">") ? address.slice(1, -1) : address;
}

/** BATV tags: prvs=TAG=user (RFC draft), msprvs1=TAG=user, btv1==TAG==user. */
const BATV = /^(?:prvs|msprvs1)=[0-9a-z]+=|^btv1==[0-9a-z]+==/;
/** SRS0=HASH=TT=domain=local and SRS1=HASH=forwarder==HASH=TT=domain=local. */
const SRS0 = /^srs0[=+-][^=]+=[^=]+=(.+)$/;
const SRS1 = /^srs1[=+-][^=]+=([^=]+)==[^=]+=[^=]+=(.+)$/;
/**
 * Tokens that change per message in VERP-style senders: whole digit runs and long hex runs after
 * a separator. Not at the start of the local part, nor after "=" (an SRS-wrapped local part): a
 * local part that is a number (123456789@qq.com) names a mailbox, and folding it would make every
 * such sender of a domain one.
 */
const VARYING_TOKEN = /(?<=[^0-9a-z=])(?:\d+|(?=[0-9a-f]*\d)[0-9a-f]{8,})(?![0-9a-z])/g;

function splitAddress(address: string): [local: string, domain: string] {
  const at = address.lastIndexOf("@");
  return at === -1 ? [address, ""] : [address.slice(0, at), address.slice(at)];
}

/**
 * The sender as it is keyed: lower case, BATV tag removed, SRS hash and timestamp fields
 * replaced by the original address, +extension dropped, and per-message digit or hex tokens
 * replaced by "#" (so "bounce-1234-5678@list.example" and "bounce-99-1@list.example" match).
 * The null sender stays "".
 */
export function normaliseSender(sender: string): string {
  const address = stripAngles(sender).toLowerCase();
  if (address === "") return "";
  let [local, domain] = splitAddress(address);
  local = local.replace(BATV, "");
  const srs1 = SRS1.exec(local);
  const srs0 = srs1 ? undefined : SRS0.exec(local);
  if (srs1) local = `srs1=${srs1[1]}=${srs1[2]}`;
  else if (srs0) local = `srs0=${srs0[1]}`;
  const plus = local.indexOf("+");
  if (plus > 0) local = local.slice(0, plus);
  return local.replace(VARYING_TOKEN, "#") + domain;
}

/** The recipient as it is keyed: angle brackets removed, lower case. */
export function normaliseRecipient(recipient: string): string {
  return stripAngles(recipient).toLowerCase();
}
