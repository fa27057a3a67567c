/**
 * Milter frames -> typed commands; pure (no sockets, timers, logging or clock).
 *
 * A frame is a big-endian uint32 length (counting the command byte and the data, never 0), one
 * command byte, then the data. Every length is checked against a cap before anything is
 * allocated, and peer input never throws: problems come back as `MilterError` values. Reply
 * encoders live in encode.ts.
 */
import * as C from "./constants";

/** Stable codes for everything the milter refuses; logged and counted, never shown to the MTA. */
export type MilterErrorCode =
  /** A frame length of 0: there is no command byte (crashes go-milter; we refuse it). */
  | "zero_length"
  /** A frame length above the decoder's cap; refused from the 4-byte header alone. */
  | "frame_too_large"
  /** A command byte that is not one of the 15 SMFIC_* commands. */
  | "unknown_command"
  /** OPTNEG data that is not exactly 12 bytes. */
  | "bad_optneg"
  /** MACRO without its command code byte, or a name without a value. */
  | "bad_macro"
  /** CONNECT with a missing or unknown family, or a missing port or address. */
  | "bad_connect"
  /** A string field without its NUL terminator, or the wrong number of strings. */
  | "bad_string"
  /** Data after a command that carries none (DATA, EOH, ABORT, QUIT, QUIT_NC). */
  | "unexpected_data"
  /** The MTA's protocol version is below 2. */
  | "unsupported_version"
  /** A reply we were asked to encode is invalid (bad SMTP code, CR/LF in the text, ...). */
  | "bad_reply"
  /** A command the session cannot take now (wrong order, or before OPTNEG). */
  | "out_of_order"
  /** A command arrived while a decision for the previous one was still outstanding. */
  | "check_outstanding"
  /** More commands sent ahead of a reply than the server queues (an MTA waits for each reply). */
  | "too_many_queued"
  /** A decision the session did not ask for (a server bug, not the MTA's). */
  | "unexpected_decision"
  /** Input after the session closed. */
  | "closed";

/** A refusal: a stable code and a short message safe for logs (it never echoes raw peer bytes). */
export interface MilterError {
  readonly code: MilterErrorCode;
  readonly message: string;
}

/** A value or the reason there is none; expected failures are values, never throws. */
export type Result<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: MilterError };

/** Builds a successful Result. */
export function ok<T>(value: T): Result<T> {
  return { ok: true, value };
}

/** Builds a failed Result. */
export function fail<T>(code: MilterErrorCode, message: string): Result<T> {
  return { ok: false, error: { code, message } };
}

/** Largest accepted frame length, bytes (command byte + data): libmilter's 65535 data bytes + 1. */
export const DEFAULT_MAX_FRAME_BYTES = C.MILTER_MAX_DATA_SIZE + 1;

/** One frame as read from the wire. */
export interface MilterFrame {
  /** The SMFIC_* command byte. */
  readonly command: number;
  /** Everything after the command byte; length = frame length - 1. */
  readonly data: Buffer;
}

/** CONNECT address family byte, as sent by the MTA. */
export type ConnectFamily = "4" | "6" | "L" | "U";

/** One decoded MTA -> filter command, tagged by `kind`. */
export type MilterCommand =
  | { readonly kind: "optneg"; readonly version: number; readonly actions: number; readonly protocol: number }
  /** `stage` is the command letter the macros belong to ("C", "H", "M", "R", "T", "E", ... any byte). */
  | { readonly kind: "macro"; readonly stage: string; readonly macros: ReadonlyMap<string, string> }
  /** `port` and `address` are undefined for family "U"; for "L" the address is the socket path. */
  | {
      readonly kind: "connect";
      readonly hostname: string;
      readonly family: ConnectFamily;
      readonly port: number | undefined;
      readonly address: string | undefined;
    }
  | { readonly kind: "helo"; readonly helo: string }
  /** `rawAddress` as sent ("<a@b>", "<>"); `address` without brackets ("" for the null sender). */
  | { readonly kind: "mail"; readonly rawAddress: string; readonly address: string; readonly args: readonly string[] }
  | { readonly kind: "rcpt"; readonly rawAddress: string; readonly address: string; readonly args: readonly string[] }
  | { readonly kind: "data" }
  | { readonly kind: "header"; readonly name: string; readonly value: string }
  | { readonly kind: "eoh" }
  | { readonly kind: "body"; readonly chunk: Buffer }
  /** libmilter treats data on BODYEOB as a last body chunk; Postfix never sends any. */
  | { readonly kind: "bodyeob"; readonly chunk: Buffer }
  | { readonly kind: "abort" }
  | { readonly kind: "quit" }
  | { readonly kind: "quit_nc" }
  | { readonly kind: "unknown"; readonly command: string };

/** The `kind` of a command. */
export type MilterCommandKind = MilterCommand["kind"];

/** What one `push` produced: the commands completed by the chunk, then the error that stopped decoding. */
export interface DecodeOutput {
  readonly commands: MilterCommand[];
  readonly error?: MilterError;
}

/**
 * Incremental decoder for one connection: feed it every chunk read from the socket. Frames may be
 * split at any byte or share a chunk. After an error it stays failed (the caller closes the
 * connection) and every later push returns the same error.
 */
export class MilterDecoder {
  private readonly maxFrameBytes: number;
  private readonly header = Buffer.alloc(C.MILTER_LEN_BYTES);
  private headerFill = 0;
  private frame: Buffer | undefined;
  private frameFill = 0;
  private failure: MilterError | undefined;

  /** `maxFrameBytes`: largest frame length accepted (default DEFAULT_MAX_FRAME_BYTES, min 13 for OPTNEG). */
  constructor(options: { readonly maxFrameBytes?: number } = {}) {
    const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    // A bad cap is a programming error in the caller, not peer input.
    if (!Number.isInteger(max) || max < 13 || max > 0x7fffffff) throw new RangeError(`maxFrameBytes ${max}`);
    this.maxFrameBytes = max;
  }

  /** Bytes of an incomplete frame held (0 at a frame boundary); non-zero at EOF means a cut-off frame. */
  get pending(): number {
    return this.headerFill + this.frameFill;
  }

  /** The error that stopped this decoder, if any. */
  get error(): MilterError | undefined {
    return this.failure;
  }

  /** Consumes one chunk; returns the commands it completed, and the error if decoding stopped. */
  push(chunk: Uint8Array): DecodeOutput {
    const commands: MilterCommand[] = [];
    if (this.failure) return { commands, error: this.failure };
    let offset = 0;
    while (offset < chunk.length) {
      if (this.frame === undefined) {
        const take = Math.min(C.MILTER_LEN_BYTES - this.headerFill, chunk.length - offset);
        this.header.set(chunk.subarray(offset, offset + take), this.headerFill);
        this.headerFill += take;
        offset += take;
        if (this.headerFill < C.MILTER_LEN_BYTES) break;
        const length = this.header.readUInt32BE(0);
        // Checked from the header alone, before allocating or waiting for the data.
        if (length === 0) return this.stop(commands, "zero_length", "frame length 0 (no command byte)");
        if (length > this.maxFrameBytes) {
          return this.stop(commands, "frame_too_large", `frame length ${length} exceeds ${this.maxFrameBytes}`);
        }
        this.frame = Buffer.alloc(length);
        this.frameFill = 0;
      }
      const take = Math.min(this.frame.length - this.frameFill, chunk.length - offset);
      this.frame.set(chunk.subarray(offset, offset + take), this.frameFill);
      this.frameFill += take;
      offset += take;
      if (this.frameFill < this.frame.length) break;
      const frame: MilterFrame = { command: this.frame[0] ?? 0, data: this.frame.subarray(1) };
      this.frame = undefined;
      this.frameFill = 0;
      this.headerFill = 0;
      const parsed = parseCommand(frame);
      if (!parsed.ok) return this.stop(commands, parsed.error.code, parsed.error.message);
      commands.push(parsed.value);
    }
    return { commands };
  }

  private stop(commands: MilterCommand[], code: MilterErrorCode, message: string): DecodeOutput {
    this.failure = { code, message };
    return { commands, error: this.failure };
  }
}

/**
 * Splits `data` from `offset` into NUL-terminated strings (UTF-8). Every string must end in NUL,
 * so trailing bytes without one are an error; an empty range gives [].
 */
export function readStrings(data: Buffer, offset: number): Result<string[]> {
  const out: string[] = [];
  let start = offset;
  while (start < data.length) {
    const end = data.indexOf(0, start);
    if (end < 0) return fail("bad_string", "string without NUL terminator");
    out.push(data.toString("utf8", start, end));
    start = end + 1;
  }
  return ok(out);
}

/** "<a@b>" -> "a@b", "<>" -> "", "<@relay:a@b>" -> "a@b" (source route dropped), "a@b" -> "a@b". */
export function stripAngleBrackets(raw: string): string {
  let address = raw.trim();
  if (address.startsWith("<") && address.endsWith(">")) address = address.slice(1, -1);
  // RFC 5321 section 4.1.2 still allows an obsolete source route before the mailbox.
  if (address.startsWith("@")) {
    const colon = address.indexOf(":");
    if (colon >= 0) address = address.slice(colon + 1);
  }
  return address;
}

const NO_DATA: Partial<Record<number, MilterCommand>> = {
  [C.SMFIC_DATA]: { kind: "data" },
  [C.SMFIC_EOH]: { kind: "eoh" },
  [C.SMFIC_ABORT]: { kind: "abort" },
  [C.SMFIC_QUIT]: { kind: "quit" },
  [C.SMFIC_QUIT_NC]: { kind: "quit_nc" },
};

/** Decodes one frame into a command, or says why it cannot. */
export function parseCommand(frame: MilterFrame): Result<MilterCommand> {
  const { command, data } = frame;
  const bare = NO_DATA[command];
  if (bare)
    return data.length === 0 ? ok(bare) : fail("unexpected_data", `${name(command)} with ${data.length} data bytes`);
  switch (command) {
    case C.SMFIC_OPTNEG:
      if (data.length !== 12) return fail("bad_optneg", `OPTNEG data is ${data.length} bytes, not 12`);
      return ok({
        kind: "optneg",
        version: data.readUInt32BE(0),
        actions: data.readUInt32BE(4),
        protocol: data.readUInt32BE(8),
      });
    case C.SMFIC_MACRO:
      return parseMacro(data);
    case C.SMFIC_CONNECT:
      return parseConnect(data);
    case C.SMFIC_HELO:
      return withStrings(data, 1, 1, "HELO", ([helo = ""]) => ({ kind: "helo", helo }));
    case C.SMFIC_MAIL:
    case C.SMFIC_RCPT: {
      const kind = command === C.SMFIC_MAIL ? "mail" : "rcpt";
      return withStrings(data, 1, Number.POSITIVE_INFINITY, name(command), ([raw = "", ...args]) => ({
        kind,
        rawAddress: raw,
        address: stripAngleBrackets(raw),
        args,
      }));
    }
    case C.SMFIC_HEADER:
      return withStrings(data, 2, 2, "HEADER", ([n = "", value = ""]) => ({ kind: "header", name: n, value }));
    case C.SMFIC_BODY:
      return ok({ kind: "body", chunk: data });
    case C.SMFIC_BODYEOB:
      return ok({ kind: "bodyeob", chunk: data });
    case C.SMFIC_UNKNOWN:
      return withStrings(data, 1, 1, "UNKNOWN", ([verb = ""]) => ({ kind: "unknown", command: verb }));
    default:
      return fail("unknown_command", `unknown command byte 0x${command.toString(16).padStart(2, "0")}`);
  }
}

function withStrings(
  data: Buffer,
  min: number,
  max: number,
  what: string,
  build: (strings: string[]) => MilterCommand,
): Result<MilterCommand> {
  const strings = readStrings(data, 0);
  if (!strings.ok) return fail("bad_string", `${what}: ${strings.error.message}`);
  const count = strings.value.length;
  if (count < min || count > max) return fail("bad_string", `${what}: ${count} strings`);
  return ok(build(strings.value));
}

// A name without a value is refused rather than dropped: the MTA that sent it is broken, and a
// half-read macro list could silently change which client or user we think we are talking to.
function parseMacro(data: Buffer): Result<MilterCommand> {
  const code = data[0];
  if (code === undefined) return fail("bad_macro", "MACRO without a command code");
  const strings = readStrings(data, 1);
  if (!strings.ok) return fail("bad_macro", `MACRO: ${strings.error.message}`);
  const list = strings.value;
  if (list.length % 2 !== 0) return fail("bad_macro", `MACRO: ${list.length} strings, not name/value pairs`);
  const macros = new Map<string, string>();
  for (let i = 0; i + 1 < list.length; i += 2) macros.set(list[i] ?? "", list[i + 1] ?? "");
  return ok({ kind: "macro", stage: String.fromCharCode(code), macros });
}

function parseConnect(data: Buffer): Result<MilterCommand> {
  const hostEnd = data.indexOf(0);
  if (hostEnd < 0) return fail("bad_connect", "CONNECT hostname without NUL terminator");
  const hostname = data.toString("utf8", 0, hostEnd);
  const familyByte = data[hostEnd + 1];
  if (familyByte === undefined) return fail("bad_connect", "CONNECT without address family");
  const family = String.fromCharCode(familyByte);
  if (!isFamily(family)) return fail("bad_connect", `CONNECT unknown family 0x${familyByte.toString(16)}`);
  if (family === C.SMFIA_UNKNOWN) {
    if (data.length !== hostEnd + 2) return fail("bad_connect", "CONNECT family U with port or address");
    return ok({ kind: "connect", hostname, family, port: undefined, address: undefined });
  }
  const portAt = hostEnd + 2;
  if (data.length < portAt + 2) return fail("bad_connect", "CONNECT without port");
  const address = readStrings(data, portAt + 2);
  if (!address.ok || address.value.length !== 1)
    return fail("bad_connect", "CONNECT address not one NUL-terminated string");
  return ok({ kind: "connect", hostname, family, port: data.readUInt16BE(portAt), address: address.value[0] });
}

function isFamily(family: string): family is ConnectFamily {
  return family === C.SMFIA_INET || family === C.SMFIA_INET6 || family === C.SMFIA_UNIX || family === C.SMFIA_UNKNOWN;
}

const NAMES: Record<number, string> = {
  [C.SMFIC_DATA]: "DATA",
  [C.SMFIC_EOH]: "EOH",
  [C.SMFIC_ABORT]: "ABORT",
  [C.SMFIC_QUIT]: "QUIT",
  [C.SMFIC_QUIT_NC]: "QUIT_NC",
  [C.SMFIC_MAIL]: "MAIL",
  [C.SMFIC_RCPT]: "RCPT",
};

function name(command: number): string {
  return NAMES[command] ?? `0x${command.toString(16)}`;
}
