/** Pure parsing of client IP addresses as MTAs write them; no node:net, no I/O. */

/** A parsed IP address: 4 bytes for IPv4 (also IPv4-mapped IPv6), 16 for IPv6. */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Strict dotted quad: four decimal octets 0-255 without leading zeros. A hot path: no regex. */
function parseIpv4(text: string): Uint8Array | undefined {
  const bytes = new Uint8Array(4);
  let octet = 0;
  let digits = 0;
  let index = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46; // a final "." closes the last octet
    if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return undefined; // leading zero
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return undefined;
    } else if (c === 46 && digits > 0 && index < 4) {
      bytes[index++] = octet;
      octet = 0;
      digits = 0;
    } else {
      return undefined;
    }
  }
  return index === 4 ? bytes : undefined;
}

/** Hex groups separated by ":"; a dotted quad only as the last group of the whole address. */
function parseGroups(text: string, endsAddress: boolean): number[] | undefined {
  if (text === "") return [];
  const groups: number[] = [];
  const parts = text.split(":");
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? "";
    if (endsAddress && i === parts.length - 1 && part.includes(".")) {
      const v4 = parseIpv4(part);
      if (!v4) return undefined;
      groups.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
    } else if (HEX_GROUP.test(part)) {
      groups.push(Number.parseInt(part, 16));
    } else {
      return undefined;
    }
  }
  return groups;
}

function parseIpv6(text: string): Uint8Array | undefined {
  if (text.length > 45) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = parseGroups(halves[0] ?? "", halves.length === 1);
  const tail = halves.length === 2 ? parseGroups(halves[1] ?? "", true) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  groups.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}

function isV4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/**
 * Parses an IPv4 or IPv6 address. Accepts sendmail's "IPv6:" prefix and [brackets]; an
 * IPv4-mapped IPv6 address becomes IPv4. Zone ids ("%eth0") are refused.
 */
export function parseIp(text: string): IpAddress | undefined {
  let value = text;
  if (value.startsWith("[") && value.endsWith("]")) value = value.slice(1, -1);
  if (value.slice(0, 5).toLowerCase() === "ipv6:") value = value.slice(5);
  if (!value.includes(":")) {
    const v4 = parseIpv4(value);
    return v4 ? { family: 4, bytes: v4 } : undefined;
  }
  const v6 = parseIpv6(value);
  if (!v6) return undefined;
  return isV4Mapped(v6) ? { family: 4, bytes: v6.slice(12) } : { family: 6, bytes: v6 };
}

/** Text form of an address: dotted quad, or eight lower-case hex groups (no :: compression). */
export function formatIp(address: IpAddress): string {
  const b = address.bytes;
  if (address.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((((b[i] ?? 0) << 8) | (b[i + 1] ?? 0)).toString(16));
  return groups.join(":");
}

/** The address with every bit after `prefixLength` cleared. */
export function maskIp(address: IpAddress, prefixLength: number): IpAddress {
  const bytes = address.bytes.slice();
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefixLength - 8 * i));
    bytes[i] = (bytes[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return { family: address.family, bytes };
}
