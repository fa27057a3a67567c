/**
 * Filter -> MTA reply encoders; pure. Each returns the whole packet (length, command, data) as one
 * Buffer, because the server must write every packet (or batch) with a single write: miltertest
 * reads the 5-byte header with one read() and fails on a short read.
 */
import { fail, ok, type Result } from "./codec";
import * as C from "./constants";

/** Longest reply text libmilter accepts, bytes (`MAXREPLYLEN` in smfi.c). */
export const MAX_REPLY_TEXT_BYTES = 980;

/** One packet: uint32 BE length (command byte + data), the command byte, the data. */
export function encodeFrame(command: number, data: Uint8Array = Buffer.alloc(0)): Buffer {
  const packet = Buffer.alloc(5 + data.length);
  packet.writeUInt32BE(1 + data.length, 0);
  packet[4] = command;
  packet.set(data, 5);
  return packet;
}

/** SMFIR_CONTINUE: go on; at end of message it accepts. */
export function encodeContinue(): Buffer {
  return encodeFrame(C.SMFIR_CONTINUE);
}

/** SMFIR_ACCEPT: accept the message without further events. */
export function encodeAccept(): Buffer {
  return encodeFrame(C.SMFIR_ACCEPT);
}

/** SMFIR_TEMPFAIL: the MTA's default 4xx (Postfix "451 4.7.1 Service unavailable - try again later"). */
export function encodeTempfail(): Buffer {
  return encodeFrame(C.SMFIR_TEMPFAIL);
}

/** SMFIR_REJECT: the MTA's default 5xx ("550 5.7.1 Command rejected"). */
export function encodeReject(): Buffer {
  return encodeFrame(C.SMFIR_REJECT);
}

/** SMFIR_PROGRESS: keep-alive while the MTA waits; sendmail accepts it only at end of message. */
export function encodeProgress(): Buffer {
  return encodeFrame(C.SMFIR_PROGRESS);
}

const ENHANCED = /^([245])\.\d{1,3}\.\d{1,3}$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: CR, LF and NUL are what it refuses
const LINE_BREAK_OR_NUL = /[\r\n\u0000]/;

/**
 * SMFIR_REPLYCODE with one line, e.g. "451 4.7.1 Greylisted, please try again later" + NUL.
 * `smtpCode` 400-599; `enhancedStatusCode` "" or "x.y.z" of the same class; `text` without
 * CR/LF/NUL, at most MAX_REPLY_TEXT_BYTES. Every '%' is doubled (sendmail reads the text as a
 * printf format; Postfix turns "%%" back into "%"), and the trailing NUL is always sent (Postfix
 * before 3.7.21 otherwise appends stale heap bytes to the SMTP reply).
 */
export function encodeReplyCode(smtpCode: number, enhancedStatusCode: string, text: string): Result<Buffer> {
  if (!Number.isInteger(smtpCode) || smtpCode < 400 || smtpCode > 599) {
    return fail("bad_reply", `SMTP code ${smtpCode} is not 4xx or 5xx`);
  }
  const codeClass = String(smtpCode)[0];
  if (enhancedStatusCode !== "") {
    const match = ENHANCED.exec(enhancedStatusCode);
    if (!match) return fail("bad_reply", "enhanced status code is not x.y.z");
    if (match[1] !== codeClass) return fail("bad_reply", `enhanced status code class differs from ${smtpCode}`);
  }
  if (LINE_BREAK_OR_NUL.test(text)) return fail("bad_reply", "reply text contains CR, LF or NUL");
  if (Buffer.byteLength(text) > MAX_REPLY_TEXT_BYTES) {
    return fail("bad_reply", `reply text longer than ${MAX_REPLY_TEXT_BYTES} bytes`);
  }
  // The space after the code is required even with nothing after it (Postfix checks "^[45]\d\d[ -]").
  const rest = [enhancedStatusCode, text.replaceAll("%", "%%")].filter((part) => part !== "").join(" ");
  return ok(encodeFrame(C.SMFIR_REPLYCODE, Buffer.from(`${smtpCode} ${rest}\0`)));
}

const HEADER_NAME = /^[!-9;-~]+$/;

/**
 * SMFIR_ADDHEADER: append one header at the end of the message (end of message only, needs
 * SMFIF_ADDHDRS). The name is printable ASCII without ':'; the value has no CR/LF/NUL (the MTA
 * folds nothing for us, so we never send a multi-line value).
 */
export function encodeAddHeader(name: string, value: string): Result<Buffer> {
  if (!HEADER_NAME.test(name)) return fail("bad_reply", "header name is not printable ASCII without ':'");
  if (LINE_BREAK_OR_NUL.test(value)) return fail("bad_reply", "header value contains CR, LF or NUL");
  if (Buffer.byteLength(value) > C.MILTER_MAX_DATA_SIZE - name.length - 3) {
    return fail("bad_reply", "header value too long");
  }
  return ok(encodeFrame(C.SMFIR_ADDHEADER, Buffer.from(`${name}\0${value}\0`)));
}

/** Macros the filter asks for at one stage: SMFIM_* stage and space-separated names. */
export interface MacroRequest {
  readonly stage: number;
  readonly names: string;
}

/** The filter's OPTNEG answer. */
export interface OptnegReply {
  readonly version: number;
  /** SMFIF_* bits the filter will use. */
  readonly actions: number;
  /** SMFIP_* bits the filter wants. */
  readonly protocol: number;
  /** Per-stage macro lists; only sent with SMFIF_SETSYMLIST in `actions`. */
  readonly macros: readonly MacroRequest[];
}

/**
 * SMFIC_OPTNEG reply: u32 version, u32 actions, u32 protocol, then for each macro list a u32
 * stage and the names, NUL-terminated. Lists are refused without SMFIF_SETSYMLIST (the MTA
 * would read them as garbage) and names must not contain NUL.
 */
export function encodeOptnegReply(reply: OptnegReply): Result<Buffer> {
  if (reply.macros.length > 0 && (reply.actions & C.SMFIF_SETSYMLIST) === 0) {
    return fail("bad_reply", "macro lists without SMFIF_SETSYMLIST");
  }
  const head = Buffer.alloc(12);
  head.writeUInt32BE(reply.version >>> 0, 0);
  head.writeUInt32BE(reply.actions >>> 0, 4);
  head.writeUInt32BE(reply.protocol >>> 0, 8);
  const parts: Buffer[] = [head];
  for (const { stage, names } of reply.macros) {
    if (names.includes("\0")) return fail("bad_reply", "macro names contain NUL");
    const stageBytes = Buffer.alloc(4);
    stageBytes.writeUInt32BE(stage, 0);
    parts.push(stageBytes, Buffer.from(`${names}\0`));
  }
  return ok(encodeFrame(C.SMFIC_OPTNEG, Buffer.concat(parts)));
}
