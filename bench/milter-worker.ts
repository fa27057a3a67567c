/**
 * Milter load the way Postfix makes it: one milter connection per SMTP session, a few sessions
 * at once, each with OPTNEG, CONNECT, HELO, MAIL, three RCPTs, DATA and end of message (or ABORT
 * when every recipient was deferred), then QUIT; every event waits for its reply. The mix of
 * messages is the benchmarks' mix: known correspondents, retries of earlier new messages, and
 * new ones. Latency is measured per recipient (RCPT to its reply). Prints one JSON line.
 *
 * Usage: node dist/bench/milter-worker.js '<json MilterWorkerOptions>'
 */
import { connect, type Socket } from "node:net";
import type { CheckRequest } from "../services/contract/gen/greyfleet/v1/greylist";
import * as C from "../services/milter/constants";
import { encodeFrame } from "../services/milter/encode";
import { type MachineCpu, machineCpu } from "./lib";
import { type Expected, Mix, type Question, triplet } from "./mix";

/** What the coordinator asks of one milter worker. */
export interface MilterWorkerOptions {
  readonly target: string;
  readonly workerId: number;
  /** SMTP sessions at once. */
  readonly sessions: number;
  readonly seconds: number;
  readonly knownTriplets: number;
  readonly delayMs: number;
  /** Seed mode: send each known message once, then stop. */
  readonly seed?: boolean;
  /**
   * The target answers by recipient name (the bare responder): the recipients of a message a
   * correct greylister would defer are named "grey-...". A greylister's recipients keep one name
   * per triplet, so that a retry is the same triplet.
   */
  readonly namesTellVerdict?: boolean;
}

/** One worker's measurements. */
export interface MilterWorkerResult {
  readonly sessions: number;
  readonly recipients: number;
  readonly latenciesUs: number[];
  /** Recipient replies by kind: continue, replycode (deferred), other. */
  readonly replies: Record<string, number>;
  readonly headers: number;
  /** Recipients answered unlike a correct greylister (a retry near the delay may go either way). */
  readonly wrongVerdicts: number;
  readonly seconds: number;
  /** The machine's CPU time when the load started and when it ended. */
  readonly machine: readonly [MachineCpu, MachineCpu];
}

const RECIPIENTS_PER_MESSAGE = 3;
const cstr = (text: string): Buffer => Buffer.from(`${text}\0`, "latin1");
const OPTNEG = (() => {
  const data = Buffer.alloc(12);
  data.writeUInt32BE(6, 0);
  data.writeUInt32BE(C.SMFI_CURR_ACTS, 4);
  data.writeUInt32BE(C.SMFI_CURR_PROT, 8);
  return encodeFrame(C.SMFIC_OPTNEG, data);
})();

/** One milter connection reading replies one at a time. */
class Connection {
  private buffered: Buffer = Buffer.alloc(0);
  private waiting: ((reply: { command: number; data: Buffer }) => void) | undefined;
  private readonly replies: { command: number; data: Buffer }[] = [];

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
      while (this.buffered.length >= 5) {
        const length = this.buffered.readUInt32BE(0);
        if (this.buffered.length < 4 + length) break;
        const reply = { command: this.buffered[4] ?? 0, data: this.buffered.subarray(5, 4 + length) };
        this.buffered = this.buffered.subarray(4 + length);
        const waiter = this.waiting;
        this.waiting = undefined;
        if (waiter) waiter(reply);
        else this.replies.push(reply);
      }
    });
    socket.on("error", () => {});
  }

  static open(target: string): Promise<Connection> {
    const colon = target.lastIndexOf(":");
    return new Promise((resolve, reject) => {
      const socket = connect(Number(target.slice(colon + 1)), target.slice(0, colon), () =>
        resolve(new Connection(socket)),
      );
      socket.once("error", reject);
    });
  }

  send(...frames: Buffer[]): void {
    this.socket.write(frames.length === 1 ? (frames[0] as Buffer) : Buffer.concat(frames));
  }

  reply(): Promise<{ command: number; data: Buffer }> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.socket.once("close", () => reject(new Error("milter closed the connection")));
    });
  }

  close(): void {
    this.socket.end();
  }
}

/** The recipients of a message built on `base`: three of its recipient's domain. */
function recipients(base: CheckRequest, grey: boolean): string[] {
  const local = base.recipient.split("@")[0] ?? "user";
  return Array.from({ length: RECIPIENTS_PER_MESSAGE }, (_, k) => `${grey ? "grey-" : ""}${local}-${k}@example.com`);
}

/** Whether a recipient's reply is what a correct greylister gives. */
function rightVerdict(expected: Expected, kind: string): boolean {
  return expected === "either" || (expected === "accept" ? kind === "continue" : kind === "replycode");
}

interface Tally {
  latenciesUs: number[];
  replies: Record<string, number>;
  headers: number;
  wrongVerdicts: number;
}

async function session(options: MilterWorkerOptions, question: Question, result: Tally): Promise<void> {
  const base = question.request;
  const grey = options.namesTellVerdict === true && question.expected === "defer";
  const connection = await Connection.open(options.target);
  connection.send(OPTNEG);
  const optneg = await connection.reply();
  const protocol = optneg.data.readUInt32BE(8);
  const replyTo = (noReplyBit: number): boolean => (protocol & noReplyBit) === 0;
  const connectData = Buffer.concat([
    cstr(base.clientName),
    Buffer.from("4"),
    Buffer.from([0x9c, 0x40]),
    cstr(base.clientAddress),
  ]);
  connection.send(
    encodeFrame(C.SMFIC_MACRO, Buffer.from("Cj\0mx.bench\0{daemon_name}\0smtpd\0")),
    encodeFrame(C.SMFIC_CONNECT, connectData),
  );
  if (replyTo(C.SMFIP_NR_CONN)) await connection.reply();
  connection.send(encodeFrame(C.SMFIC_HELO, cstr(base.heloName)));
  if (replyTo(C.SMFIP_NR_HELO)) await connection.reply();
  connection.send(encodeFrame(C.SMFIC_MACRO, Buffer.from("M")), encodeFrame(C.SMFIC_MAIL, cstr(`<${base.sender}>`)));
  await connection.reply();
  let accepted = 0;
  for (const rcpt of recipients(base, grey)) {
    const t0 = process.hrtime.bigint();
    connection.send(encodeFrame(C.SMFIC_MACRO, Buffer.from("R")), encodeFrame(C.SMFIC_RCPT, cstr(`<${rcpt}>`)));
    const reply = await connection.reply();
    result.latenciesUs.push(Number(process.hrtime.bigint() - t0) / 1000);
    const kind =
      reply.command === C.SMFIR_CONTINUE ? "continue" : reply.command === C.SMFIR_REPLYCODE ? "replycode" : "other";
    result.replies[kind] = (result.replies[kind] ?? 0) + 1;
    if (kind === "continue") accepted++;
    if (!rightVerdict(question.expected, kind)) result.wrongVerdicts++;
  }
  if (accepted > 0) {
    connection.send(encodeFrame(C.SMFIC_MACRO, Buffer.from("T")), encodeFrame(C.SMFIC_DATA));
    await connection.reply();
    connection.send(encodeFrame(C.SMFIC_MACRO, Buffer.from("E")), encodeFrame(C.SMFIC_BODYEOB));
    for (let reply = await connection.reply(); ; reply = await connection.reply()) {
      if (reply.command === C.SMFIR_ADDHEADER) result.headers++;
      else break;
    }
  }
  connection.send(encodeFrame(C.SMFIC_ABORT), encodeFrame(C.SMFIC_ABORT), encodeFrame(C.SMFIC_QUIT));
  connection.close();
}

async function run(options: MilterWorkerOptions): Promise<MilterWorkerResult> {
  const result: Tally = { latenciesUs: [], replies: {}, headers: 0, wrongVerdicts: 0 };
  const mix = new Mix(options.workerId, options.knownTriplets, options.delayMs);
  const cpu0 = machineCpu();
  const started = Date.now();
  const endAt = started + options.seconds * 1000;
  let seedIndex = 0;
  let sessions = 0;
  await Promise.all(
    Array.from({ length: options.sessions }, async () => {
      while (Date.now() < endAt) {
        let question: Question;
        if (options.seed) {
          if (seedIndex >= options.knownTriplets) return;
          // Seeding: the first pass is deferred, the second accepted; neither is measured.
          question = { request: triplet(options.workerId, seedIndex++, "known"), expected: "either" };
        } else {
          question = mix.question();
        }
        await session(options, question, result);
        sessions++;
      }
    }),
  );
  const seconds = (Date.now() - started) / 1000;
  return { sessions, recipients: result.latenciesUs.length, ...result, seconds, machine: [cpu0, machineCpu()] };
}

if (require.main === module) {
  run(JSON.parse(process.argv[2] ?? "{}") as MilterWorkerOptions).then(
    (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
    (error: unknown) => {
      process.stderr.write(`milter worker: ${String(error)}\n`);
      process.exit(1);
    },
  );
}
