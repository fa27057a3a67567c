/**
 * The benchmarks' traffic: a realistic mix of greylisting questions. 40% are triplets that have
 * passed before (known correspondents), 25% are retries of earlier new triplets (early, or late
 * enough to pass), 35% are first attempts of new triplets, from 50,000 client networks.
 */
import { CheckRequest, ProtocolState } from "../services/contract/gen/greyfleet/v1/greylist";

/**
 * A number written in letters: senders differ by letters, because digit runs are exactly what
 * sender normalisation folds together (VERP), which would make every "new" sender the same.
 */
function letters(n: number): string {
  let text = "";
  for (let rest = n; rest > 0; rest = Math.floor(rest / 26)) text = String.fromCharCode(97 + (rest % 26)) + text;
  return text || "a";
}

/**
 * The i-th triplet of a worker's space: network, sender and recipient derived from i. "known"
 * triplets are the same in every run (they are seeded once); "new" ones carry `run`, so a later
 * run's first attempts are really new.
 */
export function triplet(workerId: number, i: number, kind: "known" | "new", run = 0): CheckRequest {
  const net = i % 50_000;
  return CheckRequest.fromPartial({
    clientAddress: `10.${(net >> 8) & 0xff}.${net & 0xff}.${(i * 7) % 250}`,
    clientName: `mta${net}.example.net`,
    heloName: `mta${net}.example.net`,
    sender: `${kind}-sender-${letters(workerId)}${letters(run)}-${letters(i)}@example.org`,
    recipient: `user${i % 997}@example.com`,
    protocolState: ProtocolState.PROTOCOL_STATE_RCPT,
    queueId: "4Xb2Q31cDhz9sF",
    instance: "42cb.6b08bf55.1a52a.0",
    mtaId: `mx${workerId}`,
  });
}

/** What a correct greylister answers a question of the mix. */
export type Expected = "accept" | "defer" | "either";

/** One question of the mix and the answer it should get. */
export interface Question {
  readonly request: CheckRequest;
  readonly expected: Expected;
}

/**
 * A retry this close to the delay, either side, may get either answer: the load generator's
 * clock starts when the question is picked, the store's when it records the first attempt, ms.
 */
const EDGE_MS = 250;

/** Picks the next question of one worker's mix; keeps the state it needs for retries. */
export class Mix {
  private fresh = 0;
  /** Distinguishes this run's new triplets from every earlier run's. */
  private readonly run = process.pid * 100_000 + (Date.now() % 100_000);
  /** When each fresh triplet was first sent (epoch ms), by index. */
  private readonly sentAt: number[] = [];

  constructor(
    private readonly workerId: number,
    /** Triplets 0..knownTriplets-1 of kind "known" were seeded to pass before the run. */
    private readonly knownTriplets: number,
    /** The service's greylisting delay: retries older than this pass. */
    private readonly delayMs: number,
  ) {}

  next(): CheckRequest {
    return this.question().request;
  }

  question(): Question {
    const roll = Math.random();
    if (roll < 0.4 && this.knownTriplets > 0) {
      const request = triplet(this.workerId, Math.floor(Math.random() * this.knownTriplets), "known");
      return { request, expected: "accept" };
    }
    const now = Date.now();
    if (roll < 0.65 && this.fresh > 0) {
      // Prefer one old enough to pass; otherwise it is an early retry.
      const cutoff = now - this.delayMs;
      let i = Math.floor(Math.random() * this.fresh);
      for (let probe = 0; probe < 4 && (this.sentAt[i] ?? 0) > cutoff; probe++)
        i = Math.floor(Math.random() * this.fresh);
      const age = now - (this.sentAt[i] ?? 0);
      const expected = age > this.delayMs + EDGE_MS ? "accept" : age < this.delayMs - EDGE_MS ? "defer" : "either";
      return { request: triplet(this.workerId, 1_000_000 + i, "new", this.run), expected };
    }
    this.sentAt[this.fresh] = now;
    return { request: triplet(this.workerId, 1_000_000 + this.fresh++, "new", this.run), expected: "defer" };
  }
}
