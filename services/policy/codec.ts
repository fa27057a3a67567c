/**
 * Pure codec for Postfix's SMTP access policy delegation protocol (SMTPD_POLICY_README): a request
 * is `name=value` lines ending in LF and terminated by an empty line; a reply is
 * `action=<access(5) action>` and an empty line. No I/O: bytes in, values or error values out.
 */
import { isAscii, isUtf8 } from "node:buffer";

/** Attribute names exactly as Postfix sends them (SMTPD_POLICY_README); each key is its wire name. */
export const POLICY_ATTRIBUTE = {
  request: "request",
  protocol_state: "protocol_state",
  protocol_name: "protocol_name",
  client_address: "client_address",
  client_name: "client_name",
  reverse_client_name: "reverse_client_name",
  helo_name: "helo_name",
  sender: "sender",
  recipient: "recipient",
  recipient_count: "recipient_count",
  queue_id: "queue_id",
  instance: "instance",
  sasl_method: "sasl_method",
  sasl_username: "sasl_username",
  sasl_sender: "sasl_sender",
  size: "size",
  server_address: "server_address",
  server_port: "server_port",
  policy_context: "policy_context",
} as const;

/** The only `request` value Postfix sends, and the only one served. */
export const SMTPD_ACCESS_POLICY = "smtpd_access_policy";

/** Decoder limits, each checked before the bytes concerned are kept. */
export interface PolicyLimits {
  /** Longest `name=value` line in bytes, not counting its CR LF or LF. */
  readonly maxLineBytes: number;
  /** Most attribute lines in one request; a repeated name counts each time. */
  readonly maxAttributes: number;
  /** Largest request in bytes, counting every line ending and the terminating empty line. */
  readonly maxRequestBytes: number;
}

/** Defaults: Postfix 3.7 sends about 570 bytes in 29 attributes, so these leave room for long TLS names. */
export const DEFAULT_POLICY_LIMITS: PolicyLimits = Object.freeze({
  maxLineBytes: 2048,
  maxAttributes: 100,
  maxRequestBytes: 16 * 1024,
});

/** Stable codes of the ways a peer can break the protocol; the connection is closed for every one. */
export type PolicyErrorCode =
  | "line_too_long"
  | "too_many_attributes"
  | "request_too_large"
  | "malformed_line"
  | "binary_data"
  | "unsupported_request"
  | "invalid_attribute"
  /** More requests sent ahead of their replies than MAX_PIPELINED_REQUESTS (Postfix waits for each). */
  | "too_many_pipelined";

/** A protocol error as a value; the message quotes at most PREVIEW_BYTES of the peer's bytes. */
export class PolicyProtocolError {
  readonly kind = "error";

  constructor(
    readonly code: PolicyErrorCode,
    readonly message: string,
  ) {}
}

/** One complete request: attribute names (lower-cased) to values, unknown attributes included. */
export interface DecodedRequest {
  readonly kind: "request";
  readonly attributes: ReadonlyMap<string, string>;
}

/** What the decoder yields for each request or failure, in wire order. */
export type DecodeResult = DecodedRequest | PolicyProtocolError;

/** Most peer bytes quoted in an error message (escaped, so the text stays short and printable). */
const PREVIEW_BYTES = 40;
const LF = 0x0a;
const CR = 0x0d;
const NAME = /^[a-z0-9_]+$/i;

/** Printable rendering of the first PREVIEW_BYTES of peer input, for error messages. */
function preview(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes.subarray(0, PREVIEW_BYTES)) {
    const printable = byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c;
    out += printable ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, "0")}`;
  }
  return `"${out}${bytes.length > PREVIEW_BYTES ? "..." : ""}"`;
}

/**
 * Incremental request decoder for one connection: push() each chunk as read from the socket; a
 * request may be split at any byte and several may share a chunk. Never throws for bad input: it
 * yields a PolicyProtocolError (always the last result) and is then unusable, because the server
 * closes the connection; every later push() returns that same error again. Repeated attribute
 * names: the last value wins (SMTPD_POLICY_README allows first or last). A CR just before the LF
 * is stripped so CRLF test tools work; Postfix itself sends LF only.
 */
export class PolicyDecoder {
  private readonly limits: PolicyLimits;
  /** Copies of the unfinished line's bytes; never more than maxLineBytes + 1 (a trailing CR) in total. */
  private partial: Uint8Array[] = [];
  private partialBytes = 0;
  private attributes = new Map<string, string>();
  private attributeLines = 0;
  /** Bytes of the current request's complete lines, line endings included. */
  private requestBytes = 0;
  private failure: PolicyProtocolError | undefined;

  /** Throws RangeError for a limit that is not a positive integer (a configuration bug, not peer input). */
  constructor(limits: Partial<PolicyLimits> = {}) {
    this.limits = Object.freeze({ ...DEFAULT_POLICY_LIMITS, ...limits });
    for (const [name, value] of Object.entries(this.limits)) {
      if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer`);
    }
  }

  /** The error that ended this decoder, if any. */
  get error(): PolicyProtocolError | undefined {
    return this.failure;
  }

  /** Feeds one chunk; returns the requests it completed and, last, an error if the peer broke the protocol. */
  push(chunk: Uint8Array): DecodeResult[] {
    if (this.failure) return [this.failure];
    const results: DecodeResult[] = [];
    // What Postfix sends is ASCII almost always: such a chunk is read as text once, not line by
    // line (Latin-1 keeps one character per byte, so offsets in the text are offsets in the chunk).
    const text =
      chunk.indexOf(0) === -1 && isAscii(chunk)
        ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length).toString("latin1")
        : undefined;
    let start = 0;
    while (start < chunk.length) {
      const lf = text === undefined ? chunk.indexOf(LF, start) : text.indexOf("\n", start);
      const error = lf === -1 ? this.keepPartial(chunk.subarray(start)) : this.endLine(chunk, start, lf, text, results);
      if (error) {
        this.failure = error;
        this.partial = [];
        results.push(error);
        break;
      }
      start = lf === -1 ? chunk.length : lf + 1;
    }
    return results;
  }

  /** Keeps the bytes of a line whose LF has not arrived yet, refusing them once no LF can make them fit. */
  private keepPartial(bytes: Uint8Array): PolicyProtocolError | undefined {
    const total = this.partialBytes + bytes.length;
    const endsInCr = bytes[bytes.length - 1] === CR;
    if (total > this.limits.maxLineBytes + (endsInCr ? 1 : 0)) return this.tooLong(bytes);
    if (this.requestBytes + total > this.limits.maxRequestBytes) return this.tooLarge();
    this.partial.push(Uint8Array.from(bytes));
    this.partialBytes = total;
    return undefined;
  }

  /**
   * Completes the line ending at the LF at `lf` in `chunk`, whose part in this chunk starts at
   * `start`; `text` is the chunk read as text when it is ASCII.
   */
  private endLine(
    chunk: Uint8Array,
    start: number,
    lf: number,
    text: string | undefined,
    results: DecodeResult[],
  ): PolicyProtocolError | undefined {
    const total = this.partialBytes + lf - start;
    const last = lf > start ? chunk[lf - 1] : this.partial.at(-1)?.at(-1);
    const contentBytes = last === CR ? total - 1 : total;
    if (contentBytes > this.limits.maxLineBytes) return this.tooLong(chunk.subarray(start, lf));
    if (this.requestBytes + total + 1 > this.limits.maxRequestBytes) return this.tooLarge();
    this.requestBytes += total + 1;
    if (contentBytes === 0) {
      this.partial = [];
      this.partialBytes = 0;
      results.push({ kind: "request", attributes: this.attributes });
      this.attributes = new Map();
      this.attributeLines = 0;
      this.requestBytes = 0;
      return undefined;
    }
    if (this.partial.length === 0 && text !== undefined) {
      return this.addAttribute(text, start, start + contentBytes, () => chunk.subarray(start, start + contentBytes));
    }
    const line = Buffer.concat([...this.partial, chunk.subarray(start, lf)]).subarray(0, contentBytes);
    this.partial = [];
    this.partialBytes = 0;
    // Postfix passes on what the SMTP client sent: 8-bit text that is not UTF-8 (read as
    // Latin-1, so that a retry reads the same), control characters (the shim makes them "?").
    // Only a NUL byte, which no Postfix string holds, is not the protocol.
    const nul = line.indexOf(0);
    if (nul !== -1) return new PolicyProtocolError("binary_data", `NUL byte at offset ${nul} in line ${preview(line)}`);
    const lineText = line.toString(isUtf8(line) ? "utf8" : "latin1");
    return this.addAttribute(lineText, 0, lineText.length, () => line);
  }

  /** Adds the attribute `text` holds from `from` to `to`; `bytes` gives its bytes for an error message. */
  private addAttribute(
    text: string,
    from: number,
    to: number,
    bytes: () => Uint8Array,
  ): PolicyProtocolError | undefined {
    this.attributeLines += 1;
    if (this.attributeLines > this.limits.maxAttributes) {
      return new PolicyProtocolError("too_many_attributes", `more than ${this.limits.maxAttributes} attributes`);
    }
    // Values may contain "=": split at the first one (attr_scan_plain.c).
    const eq = text.indexOf("=", from);
    const name = eq === -1 || eq >= to ? "" : text.slice(from, eq);
    if (!NAME.test(name)) {
      return new PolicyProtocolError("malformed_line", `expected name=value, got ${preview(bytes())}`);
    }
    this.attributes.set(name.toLowerCase(), text.slice(eq + 1, to));
    return undefined;
  }

  private tooLong(tail: Uint8Array): PolicyProtocolError {
    const start = Buffer.concat([...this.partial, tail.subarray(0, PREVIEW_BYTES)]);
    return new PolicyProtocolError(
      "line_too_long",
      `line longer than ${this.limits.maxLineBytes} bytes: ${preview(start)}`,
    );
  }

  private tooLarge(): PolicyProtocolError {
    return new PolicyProtocolError("request_too_large", `request larger than ${this.limits.maxRequestBytes} bytes`);
  }
}

/** Attribute names whose value is kept as text; the other two are counts. */
type TextAttribute = Exclude<keyof typeof POLICY_ATTRIBUTE, "recipient_count" | "size">;

/**
 * The attributes greylisting uses, named as on the wire so there is one spelling. A missing one is
 * "" (or 0), as older Postfix versions omit some. recipient_count is non-zero only at DATA and
 * END-OF-MESSAGE; size is the MAIL SIZE= value, the actual size in bytes at END-OF-MESSAGE.
 */
export type PolicyRequest = { readonly [name in TextAttribute]: string } & {
  readonly recipient_count: number;
  readonly size: number;
};

/** Counts are decimal; 15 digits stay exact in a double. */
const COUNT = /^[0-9]{1,15}$/;

/** Turns decoded attributes into a PolicyRequest, or an error value for another request type or a bad count. */
export function toPolicyRequest(attributes: ReadonlyMap<string, string>): PolicyRequest | PolicyProtocolError {
  const request = attributes.get(POLICY_ATTRIBUTE.request) ?? "";
  if (request !== SMTPD_ACCESS_POLICY) {
    const shown = preview(Buffer.from(request));
    return new PolicyProtocolError("unsupported_request", `request must be ${SMTPD_ACCESS_POLICY}, got ${shown}`);
  }
  const recipientCount = count(attributes, "recipient_count");
  if (typeof recipientCount !== "number") return recipientCount;
  const size = count(attributes, "size");
  if (typeof size !== "number") return size;
  const text = (name: TextAttribute): string => attributes.get(name) ?? "";
  return {
    request,
    protocol_state: text("protocol_state"),
    protocol_name: text("protocol_name"),
    client_address: text("client_address"),
    client_name: text("client_name"),
    reverse_client_name: text("reverse_client_name"),
    helo_name: text("helo_name"),
    sender: text("sender"),
    recipient: text("recipient"),
    recipient_count: recipientCount,
    queue_id: text("queue_id"),
    instance: text("instance"),
    size,
    sasl_method: text("sasl_method"),
    sasl_username: text("sasl_username"),
    sasl_sender: text("sasl_sender"),
    server_address: text("server_address"),
    server_port: text("server_port"),
    policy_context: text("policy_context"),
  };
}

/** A count attribute: "" is 0; anything but decimal digits is an error value. */
function count(
  attributes: ReadonlyMap<string, string>,
  name: "recipient_count" | "size",
): number | PolicyProtocolError {
  const value = attributes.get(name) ?? "";
  if (value === "") return 0;
  if (!COUNT.test(value)) {
    return new PolicyProtocolError("invalid_attribute", `${name} is not a count: ${preview(Buffer.from(value))}`);
  }
  return Number(value);
}

/** Longest action text in UTF-8 bytes, so that `action=<text>\n\n` stays under 1000 bytes. */
export const MAX_ACTION_BYTES = 990;

// Tab is allowed (RFC 5321 textstring); \p{Cs} under the u flag matches only lone surrogates.
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
const FORBIDDEN_IN_ACTION = /[\u0000-\u0008\u000a-\u001f\u007f]|\p{Cs}/u;

/** Why `action` cannot be sent, or undefined if it can; lets configured reply texts be checked at start-up. */
export function actionProblem(action: string): string | undefined {
  if (action === "") return "action is empty";
  if (FORBIDDEN_IN_ACTION.test(action)) return "action contains CR, LF, NUL or another control character";
  if (Buffer.byteLength(action) > MAX_ACTION_BYTES) return `action longer than ${MAX_ACTION_BYTES} bytes`;
  return undefined;
}

/**
 * Encodes `action=<action>\n\n`. Throws RangeError when actionProblem() refuses the text: replies
 * are built from checked configuration, so a bad one is a programming error, not peer input.
 */
export function encodeReply(action: string): Buffer {
  const problem = actionProblem(action);
  if (problem !== undefined) throw new RangeError(problem);
  return Buffer.from(`action=${action}\n\n`, "utf8");
}

/** `DUNNO`: no decision here, Postfix goes on with the next restriction (greylisting's "pass"). */
export function encodeDunno(): Buffer {
  return encodeReply("DUNNO");
}

/** `DEFER_IF_PERMIT <text>`: 450 4.7.1 if the remaining restrictions would permit the recipient. */
export function encodeDeferIfPermit(text: string): Buffer {
  return encodeReply(text === "" ? "DEFER_IF_PERMIT" : `DEFER_IF_PERMIT ${text}`);
}

/** `<code> <enhanced> <text>`, e.g. 451 4.7.1 Greylisted (enhanced "" lets Postfix pick); RangeError on bad codes. */
export function encodeSmtpReply(code: number, enhancedCode: string, text: string): Buffer {
  if (!Number.isInteger(code) || code < 400 || code > 599) throw new RangeError("SMTP code must be 4NN or 5NN");
  const enhanced = /^([45])\.[0-9]{1,3}\.[0-9]{1,3}$/.exec(enhancedCode);
  if (enhancedCode !== "" && enhanced?.[1] !== String(code)[0]) {
    throw new RangeError("enhanced status code must be X.Y.Z with the SMTP code's class");
  }
  return encodeReply([String(code), enhancedCode, text].filter((part) => part !== "").join(" "));
}

/** `PREPEND <header>: <value>`: adds a header and continues. Throws RangeError on a bad header name. */
export function encodePrepend(header: string, value: string): Buffer {
  // RFC 5322 field-name: printable ASCII except colon.
  if (!/^[!-9;-~]+$/.test(header)) throw new RangeError("header name must be printable ASCII without ':'");
  return encodeReply(`PREPEND ${header}: ${value}`);
}

/** `REJECT <text>`: permanent 5xx ($access_map_reject_code, 554 by default). */
export function encodeReject(text: string): Buffer {
  return encodeReply(text === "" ? "REJECT" : `REJECT ${text}`);
}
