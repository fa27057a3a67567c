/**
 * A milter client (MTA side) for tests, speaking to the shim the way Postfix 3.7 does: it offers
 * v6 / all actions / all steps, sends each stage's macros (empty lists too) before the event,
 * skips the events the filter negotiated away (SMFIP_NO*), reads no reply where it negotiated
 * SMFIP_NR_*, and says ABORT, ABORT, QUIT at the end. Frames are built with the shim's own
 * encodeFrame; replies are parsed here, with every length bounded, and each remembers in which
 * socket read it arrived (to check that packets came in one write). Assertions on replies too.
 */
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import * as C from "../../services/milter/constants";
import { encodeFrame } from "../../services/milter/encode";

/** What Postfix 3.7.11 and sendmail 8.17 offer: `00 00 00 06 | 00 00 01 ff | 00 1f ff ff`. */
export const POSTFIX_OFFER = { version: 6, actions: C.SMFI_CURR_ACTS, protocol: C.SMFI_CURR_PROT } as const;

/** The REPLYCODE text of a greylisting deferral with the default reply. */
export const GREYLISTED = "451 4.7.1 Greylisted, please try again later";

/** Largest reply the client accepts, bytes (command + data); the shim never sends more. */
const MAX_REPLY_BYTES = C.MILTER_MAX_DATA_SIZE + 1;

/** Replies that end an event (everything else at end of message is a modification or progress). */
const FINAL_REPLIES: ReadonlySet<number> = new Set([
  C.SMFIR_CONTINUE,
  C.SMFIR_ACCEPT,
  C.SMFIR_REJECT,
  C.SMFIR_TEMPFAIL,
  C.SMFIR_REPLYCODE,
  C.SMFIR_DISCARD,
  C.SMFIR_SKIP,
  C.SMFIR_SHUTDOWN,
]);

/** One filter -> MTA packet. */
export interface Reply {
  readonly command: number;
  readonly data: Buffer;
  /** Index of the socket read that held the packet's first byte, and its last. */
  readonly firstRead: number;
  readonly lastRead: number;
}

/** The filter's OPTNEG answer. */
export interface Negotiation {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
  /** Requested macro names by SMFIM_* stage. */
  readonly macros: ReadonlyMap<number, string>;
}

/** The SMTP client as the CONNECT packet describes it. */
export interface SmtpClient {
  readonly hostname: string;
  /** "4", "6", "L" (unix socket: port 0, address = path) or "U" (no port, no address). */
  readonly family: "4" | "6" | "L" | "U";
  readonly port?: number;
  readonly address?: string;
}

/** A reply as text for assertions: the letter, then any data as JSON ("c", 'y "451 4.7.1 …\\u0000"'). */
export function formatReply(reply: Reply | undefined): string {
  if (reply === undefined) return "(no reply)";
  const letter = String.fromCharCode(reply.command);
  return reply.data.length === 0 ? letter : `${letter} ${JSON.stringify(reply.data.toString("latin1"))}`;
}

/** A REPLYCODE packet carrying `text` and one trailing NUL. */
export function replyCode(text: string): Reply {
  return { command: C.SMFIR_REPLYCODE, data: Buffer.from(`${text}\0`), firstRead: 0, lastRead: 0 };
}

/** A REPLYCODE carrying exactly `text` and one trailing NUL. */
export function assertReplyCode(reply: Reply | undefined, text: string): void {
  assert.equal(formatReply(reply), formatReply(replyCode(text)));
}

/** A CONTINUE without data. */
export function assertContinue(reply: Reply | undefined): void {
  assert.equal(formatReply(reply), "c");
}

/** End of message after a pass: one ADDHEADER X-Greylist, then CONTINUE, both from one write. */
export function assertXGreylistThenContinue(packets: readonly Reply[]): void {
  const [header, accept, ...rest] = packets;
  assert.equal(header?.command, C.SMFIR_ADDHEADER, formatReply(header));
  const [name, value, end] = (header?.data.toString() ?? "").split("\0");
  assert.equal(name, "X-Greylist");
  assert.match(value ?? "", /^delayed [12] seconds by greyfleet-\S+ at \S+; /);
  assert.equal(end, "", "name and value each NUL-terminated, nothing after");
  assertContinue(accept);
  assert.deepEqual(rest, []);
  assert.equal(header?.firstRead, accept?.lastRead, "X-Greylist and CONTINUE arrive in one write");
}

/** An SMTP client at an IPv4 address, as a milter CONNECT names it. */
export const ipv4 = (address: string): SmtpClient => ({ hostname: `[${address}]`, family: "4", port: 54321, address });

/** Negotiated, CONNECT and HELO sent (neither answered: NR_CONN, NR_HELO). */
export async function smtpSession(address: string, client: SmtpClient): Promise<MilterClient> {
  const milter = await MilterClient.negotiated(address);
  assert.equal(await milter.connectEvent(client), undefined);
  assert.equal(await milter.helo("client.example.net"), undefined);
  return milter;
}

/** One milter connection from the MTA side. */
export class MilterClient {
  private pending = Buffer.alloc(0);
  private pendingFirstRead = 0;
  private reads = 0;
  private readonly replies: Reply[] = [];
  private wake: (() => void) | undefined;
  private ended = false;
  /** Resolves when the filter has closed the connection (or it broke). */
  readonly closed: Promise<void>;
  /** The filter's OPTNEG answer, once negotiated. */
  negotiation: Negotiation | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => {}); // a reset by the filter shows up as "close"
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.ended = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  /** Connects to "HOST:PORT" or "unix:/path". */
  static open(address: string): Promise<MilterClient> {
    return new Promise((resolve, reject) => {
      const colon = address.lastIndexOf(":");
      const socket = address.startsWith("unix:")
        ? connect({ path: address.slice("unix:".length) })
        : connect({ host: address.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(address.slice(colon + 1)) });
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        resolve(new MilterClient(socket));
      });
    });
  }

  /** Opens a connection and negotiates like Postfix. */
  static async negotiated(address: string): Promise<MilterClient> {
    const client = await MilterClient.open(address);
    await client.negotiate();
    return client;
  }

  /** Writes raw bytes (for garbage and cut-off frames). */
  sendRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Writes one frame, in one write, as Postfix does. */
  send(command: number, data: Uint8Array = Buffer.alloc(0)): void {
    this.socket.write(encodeFrame(command, data));
  }

  /** The next reply packet; rejects if the filter closes first or nothing comes in `timeoutMs`. */
  async next(what: string, timeoutMs = 5_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const reply = this.replies.shift();
      if (reply) return reply;
      if (this.ended) throw new Error(`the filter closed the connection instead of answering ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply to ${what} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Replies received and not yet read. */
  get unread(): readonly Reply[] {
    return this.replies;
  }

  /** SMFIC_OPTNEG; returns the parsed answer (also kept in `negotiation`). */
  async negotiate(offer: { version: number; actions: number; protocol: number } = POSTFIX_OFFER): Promise<Negotiation> {
    const data = Buffer.alloc(12);
    data.writeUInt32BE(offer.version, 0);
    data.writeUInt32BE(offer.actions, 4);
    data.writeUInt32BE(offer.protocol, 8);
    this.send(C.SMFIC_OPTNEG, data);
    const reply = await this.next("OPTNEG");
    if (reply.command !== C.SMFIC_OPTNEG || reply.data.length < 12)
      throw new Error(`OPTNEG answered ${formatReply(reply)}`);
    const macros = new Map<number, string>();
    for (let at = 12; at < reply.data.length; ) {
      const end = reply.data.indexOf(0, at + 4);
      if (end < 0) throw new Error("OPTNEG macro list without NUL");
      macros.set(reply.data.readUInt32BE(at), reply.data.toString("latin1", at + 4, end));
      at = end + 1;
    }
    this.negotiation = {
      version: reply.data.readUInt32BE(0),
      actions: reply.data.readUInt32BE(4),
      protocol: reply.data.readUInt32BE(8),
      macros,
    };
    return this.negotiation;
  }

  /** SMFIC_MACRO for the event `stage` (an SMFIC_* byte); an empty list is sent too, as Postfix does. */
  macro(stage: number, macros: Readonly<Record<string, string>> = {}): void {
    const pairs = Object.entries(macros).flat();
    this.send(C.SMFIC_MACRO, Buffer.concat([Buffer.from([stage]), ...pairs.map((s) => Buffer.from(`${s}\0`))]));
  }

  /** Postfix's default connect macros, then SMFIC_CONNECT. */
  connectEvent(client: SmtpClient): Promise<Reply | undefined> {
    this.macro(C.SMFIC_CONNECT, { j: "mx.test", "{daemon_name}": "mx.test", v: "Postfix 3.7.11" });
    const parts = [Buffer.from(`${client.hostname}\0${client.family}`)];
    if (client.family !== "U") {
      const port = Buffer.alloc(2);
      port.writeUInt16BE(client.port ?? 0, 0);
      parts.push(port, Buffer.from(`${client.address ?? ""}\0`));
    }
    return this.event("CONNECT", C.SMFIC_CONNECT, Buffer.concat(parts), C.SMFIP_NOCONNECT, C.SMFIP_NR_CONN);
  }

  /** An empty HELO macro list, then SMFIC_HELO. */
  helo(name: string): Promise<Reply | undefined> {
    this.macro(C.SMFIC_HELO);
    return this.event("HELO", C.SMFIC_HELO, Buffer.from(`${name}\0`), C.SMFIP_NOHELO, C.SMFIP_NR_HELO);
  }

  /** MAIL macros ({mail_addr}, and {auth_authen} when `authUser` is set), then SMFIC_MAIL "<sender>". */
  mail(sender: string, options: { authUser?: string; args?: readonly string[] } = {}): Promise<Reply | undefined> {
    const macros: Record<string, string> = { "{mail_addr}": sender };
    if (options.authUser) Object.assign(macros, { "{auth_type}": "PLAIN", "{auth_authen}": options.authUser });
    this.macro(C.SMFIC_MAIL, macros);
    const data = [`<${sender}>`, ...(options.args ?? [])].map((s) => `${s}\0`).join("");
    return this.event("MAIL", C.SMFIC_MAIL, Buffer.from(data), C.SMFIP_NOMAIL, C.SMFIP_NR_MAIL);
  }

  /** RCPT macros, then SMFIC_RCPT "<recipient>". */
  rcpt(recipient: string): Promise<Reply | undefined> {
    this.macro(C.SMFIC_RCPT, { "{rcpt_addr}": recipient, "{rcpt_mailer}": "smtp" });
    return this.event("RCPT", C.SMFIC_RCPT, Buffer.from(`<${recipient}>\0`), C.SMFIP_NORCPT, C.SMFIP_NR_RCPT);
  }

  /** DATA macros, then SMFIC_DATA unless skipped; nothing below protocol version 4, which has no DATA. */
  async data(): Promise<Reply | undefined> {
    if ((this.negotiation?.version ?? 0) < 4) return undefined;
    this.macro(C.SMFIC_DATA, { i: "4ABC123" });
    return this.event("DATA", C.SMFIC_DATA, Buffer.alloc(0), C.SMFIP_NODATA, C.SMFIP_NR_DATA);
  }

  /**
   * Headers, EOH and one body chunk, each only if not skipped, then SMFIC_BODYEOB: returns every
   * packet up to and including the final reply (modifications first).
   */
  async endOfMessage(): Promise<Reply[]> {
    for (const [name, value] of [
      ["From", "sender@example.org"],
      ["Subject", "greylisting test"],
    ] as const) {
      await this.event("HEADER", C.SMFIC_HEADER, Buffer.from(`${name}\0${value}\0`), C.SMFIP_NOHDRS, C.SMFIP_NR_HDR);
    }
    await this.event("EOH", C.SMFIC_EOH, Buffer.alloc(0), C.SMFIP_NOEOH, C.SMFIP_NR_EOH);
    await this.event("BODY", C.SMFIC_BODY, Buffer.from("Hello.\r\n"), C.SMFIP_NOBODY, C.SMFIP_NR_BODY);
    this.macro(C.SMFIC_BODYEOB, { i: "4ABC123" });
    this.send(C.SMFIC_BODYEOB);
    const packets: Reply[] = [];
    for (;;) {
      const reply = await this.next("BODYEOB");
      if (reply.command === C.SMFIR_PROGRESS) continue;
      packets.push(reply);
      if (FINAL_REPLIES.has(reply.command)) return packets;
    }
  }

  /** SMFIC_ABORT (never answered). */
  abort(): void {
    this.send(C.SMFIC_ABORT);
  }

  /** ABORT, ABORT, QUIT as Postfix does at SMTP QUIT; waits for the filter to close; fails on unread replies. */
  async quit(): Promise<void> {
    this.abort();
    this.abort();
    this.send(C.SMFIC_QUIT);
    await this.closed;
    if (this.replies.length > 0) throw new Error(`unread replies: ${this.replies.map(formatReply).join(", ")}`);
  }

  /** Half-closes the connection (the filter sees EOF). */
  end(): void {
    this.socket.end();
  }

  /** Drops the connection at once. */
  destroy(): void {
    this.socket.destroy();
  }

  private has(bit: number): boolean {
    if (!this.negotiation) throw new Error("event before OPTNEG");
    return (this.negotiation.protocol & bit) !== 0;
  }

  // Sends one event unless negotiated away (`skip`), and reads its reply unless `noReply` was negotiated.
  private async event(
    what: string,
    command: number,
    data: Buffer,
    skip: number,
    noReply: number,
  ): Promise<Reply | undefined> {
    if (this.has(skip)) return undefined;
    this.send(command, data);
    if (this.has(noReply)) return undefined;
    const reply = await this.next(what);
    if (!FINAL_REPLIES.has(reply.command)) throw new Error(`${what} answered ${formatReply(reply)}`);
    return reply;
  }

  private onData(chunk: Buffer): void {
    const read = this.reads++;
    if (this.pending.length === 0) this.pendingFirstRead = read;
    this.pending = Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= 4) {
      const length = this.pending.readUInt32BE(0);
      if (length === 0 || length > MAX_REPLY_BYTES) {
        this.socket.destroy(new Error(`reply frame length ${length}`));
        return;
      }
      if (this.pending.length < 4 + length) break;
      const command = this.pending[4] ?? 0;
      this.replies.push({
        command,
        data: Buffer.from(this.pending.subarray(5, 4 + length)),
        firstRead: this.pendingFirstRead,
        lastRead: read,
      });
      this.pending = this.pending.subarray(4 + length);
      this.pendingFirstRead = read;
    }
    this.wake?.();
  }
}
