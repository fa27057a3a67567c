/**
 * Load for a Postfix policy server, the way Postfix loads it: a few persistent connections,
 * each with exactly one request in flight. Every request is a full Postfix RCPT request with a
 * question from the shared mix. In seed mode it sends each "known" triplet once and stops.
 * Prints one JSON line of results to stdout.
 *
 * Usage: node dist/bench/policy-worker.js '<json PolicyWorkerOptions>'
 */
import { connect, type Socket } from "node:net";
import type { CheckRequest } from "../services/contract/gen/greyfleet/v1/greylist";
import { type MachineCpu, machineCpu } from "./lib";
import { Mix, type Question, triplet } from "./mix";

/** What the coordinator asks of one policy worker. */
export interface PolicyWorkerOptions {
  /** HOST:PORT of the policy server. */
  readonly target: string;
  readonly workerId: number;
  readonly connections: number;
  readonly seconds: number;
  readonly knownTriplets: number;
  readonly delayMs: number;
  readonly seed?: boolean;
}

/** One worker's measurements. */
export interface PolicyWorkerResult {
  readonly requests: number;
  readonly latenciesUs: number[];
  /** Replies by their action word (DUNNO, DEFER_IF_PERMIT, PREPEND, ...). */
  readonly actions: Record<string, number>;
  /**
   * Requests answered unlike a correct greylister: DEFER_IF_PERMIT (or 4xx) for a triplet that
   * should pass, anything else for one that should wait (a retry near the delay may go either way).
   */
  readonly wrongVerdicts: number;
  readonly seconds: number;
  /** The machine's CPU time when the load started and when it ended. */
  readonly machine: readonly [MachineCpu, MachineCpu];
}

/** Messages this process has asked about: each request is a message of its own. */
let messages = 0;

/**
 * A Postfix 3.7 RCPT request for `check`, as the only recipient of a new message (its own
 * instance: the shim sends one X-Greylist header per instance).
 */
export function postfixRequest(check: CheckRequest): string {
  messages++;
  return (
    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n" +
    `client_address=${check.clientAddress}\nclient_name=${check.clientName}\n` +
    `client_port=40000\nreverse_client_name=${check.clientName}\nserver_address=127.0.0.1\n` +
    `server_port=25\nhelo_name=${check.heloName}\nsender=${check.sender}\nrecipient=${check.recipient}\n` +
    `recipient_count=0\nqueue_id=\ninstance=${process.pid.toString(16)}.6b08bf55.1a52a.${messages.toString(16)}\n` +
    "size=0\netrn_domain=\nstress=\n" +
    "sasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n" +
    "ccert_pubkey_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n"
  );
}

/** One connection that answers a request at a time. */
class Connection {
  private buffered = "";
  private waiting: { resolve: (reply: string) => void; reject: (error: Error) => void } | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.setEncoding("utf8");
    socket.on("close", () => this.waiting?.reject(new Error("policy server closed the connection")));
    socket.on("data", (chunk: string) => {
      this.buffered += chunk;
      const end = this.buffered.indexOf("\n\n");
      if (end !== -1) {
        const reply = this.buffered.slice(0, end);
        this.buffered = this.buffered.slice(end + 2);
        const waiting = this.waiting;
        this.waiting = undefined;
        waiting?.resolve(reply);
      }
    });
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

  ask(request: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.socket.write(request);
    });
  }

  close(): void {
    this.socket.end();
  }
}

async function run(options: PolicyWorkerOptions): Promise<PolicyWorkerResult> {
  const connections = await Promise.all(
    Array.from({ length: options.connections }, () => Connection.open(options.target)),
  );
  const latenciesUs: number[] = [];
  const actions: Record<string, number> = {};
  const mix = new Mix(options.workerId, options.knownTriplets, options.delayMs);
  const cpu0 = machineCpu();
  const started = Date.now();
  const endAt = started + options.seconds * 1000;
  let seedIndex = 0;
  let wrongVerdicts = 0;
  const next = (): Question | undefined => {
    if (!options.seed) return mix.question();
    // Seeding: the first pass is deferred, the second accepted; neither is measured.
    if (seedIndex >= options.knownTriplets) return undefined;
    return { request: triplet(options.workerId, seedIndex++, "known"), expected: "either" };
  };
  await Promise.all(
    connections.map(async (connection) => {
      for (let question = next(); question && Date.now() < endAt; question = next()) {
        const t0 = process.hrtime.bigint();
        const reply = await connection.ask(postfixRequest(question.request));
        latenciesUs.push(Number(process.hrtime.bigint() - t0) / 1000);
        const action = /^action=(\S+)/.exec(reply)?.[1] ?? "?";
        actions[action] = (actions[action] ?? 0) + 1;
        const deferred = action === "DEFER_IF_PERMIT" || /^4\d\d$/.test(action);
        if (question.expected !== "either" && deferred !== (question.expected === "defer")) wrongVerdicts++;
      }
      connection.close();
    }),
  );
  const seconds = (Date.now() - started) / 1000;
  return { requests: latenciesUs.length, latenciesUs, actions, wrongVerdicts, seconds, machine: [cpu0, machineCpu()] };
}

if (require.main === module) {
  run(JSON.parse(process.argv[2] ?? "{}") as PolicyWorkerOptions).then(
    (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
    (error: unknown) => {
      process.stderr.write(`policy worker: ${String(error)}\n`);
      process.exit(1);
    },
  );
}
