/**
 * One load-generator process: keeps `inFlight` Check calls going over a minimal HTTP/2 client
 * (h2-client.ts: far cheaper per call than grpc-js or node:http2, so the generator is not the
 * bottleneck) for a bounded time, with a realistic mix of new, retried and known triplets from
 * many client networks. Optionally paced to a fixed rate (open loop). In seed mode it sends each
 * "known" triplet once and stops (the coordinator seeds twice, a delay apart, so they pass).
 * Prints one JSON line of results to stdout.
 *
 * Usage: node dist/bench/load-worker.js '<json WorkerOptions>'
 */
import { Action, CheckRequest, CheckResponse } from "../services/contract/gen/greyfleet/v1/greylist";
import { H2GrpcClient } from "./h2-client";
import { Mix, triplet } from "./mix";

/** What the coordinator asks of one worker. */
export interface WorkerOptions {
  readonly target: string;
  readonly workerId: number;
  readonly inFlight: number;
  readonly seconds: number;
  /** Requests per second for this worker; 0 = as fast as `inFlight` allows. */
  readonly rate: number;
  /** Triplets seeded as known before the run (sent twice, `delayMs` apart, by the coordinator). */
  readonly knownTriplets: number;
  /** Greylisting delay of the service, for picking retries that pass. */
  readonly delayMs: number;
  /** Seed mode: send known triplets 0..knownTriplets-1 once each, then stop. */
  readonly seed?: boolean;
}

/** One worker's measurements. */
export interface WorkerResult {
  readonly calls: number;
  readonly errors: number;
  readonly latenciesUs: number[];
  readonly actions: Record<string, number>;
  /**
   * Answers unlike a correct greylister's: ACTION_DEFER for a triplet that should pass, anything
   * else for one that should wait (a retry near the delay may go either way). Meaningless for the
   * echo server, which answers every call alike.
   */
  readonly wrongVerdicts: number;
  readonly seconds: number;
}

const PATH = "/greyfleet.v1.GreylistService/Check";

async function run(options: WorkerOptions): Promise<WorkerResult> {
  const client = await H2GrpcClient.open(options.target, PATH);
  const latenciesUs: number[] = [];
  const actions: Record<string, number> = {};
  let calls = 0;
  let errors = 0;
  let wrongVerdicts = 0;
  const started = Date.now();
  const endAt = started + options.seconds * 1000;
  const mix = new Mix(options.workerId, options.knownTriplets, options.delayMs);

  const one = async (): Promise<void> => {
    const question = mix.question();
    const t0 = process.hrtime.bigint();
    const result = await client.call(CheckRequest.encode(question.request).finish());
    calls++;
    if (!result.ok) {
      errors++;
      return;
    }
    latenciesUs.push(Number(process.hrtime.bigint() - t0) / 1000);
    const action = CheckResponse.decode(result.message).action;
    actions[action] = (actions[action] ?? 0) + 1;
    const deferred = action === Action.ACTION_DEFER;
    if (question.expected !== "either" && deferred !== (question.expected === "defer")) wrongVerdicts++;
  };

  if (options.seed) {
    let nextIndex = 0;
    const seeder = async (): Promise<void> => {
      while (nextIndex < options.knownTriplets && Date.now() < endAt) {
        const t0 = process.hrtime.bigint();
        const result = await client.call(CheckRequest.encode(triplet(options.workerId, nextIndex++, "known")).finish());
        calls++;
        if (result.ok) latenciesUs.push(Number(process.hrtime.bigint() - t0) / 1000);
        else errors++;
      }
    };
    await Promise.all(Array.from({ length: options.inFlight }, seeder));
  } else if (options.rate > 0) {
    // Open loop: start calls on a fixed schedule, at most inFlight at once.
    const intervalMs = 1000 / options.rate;
    let outstanding = 0;
    let due = Date.now();
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = Date.now();
        if (now >= endAt) {
          const wait = setInterval(() => {
            if (outstanding === 0) {
              clearInterval(wait);
              resolve();
            }
          }, 5);
          return;
        }
        while (due <= now && outstanding < options.inFlight) {
          outstanding++;
          void one().then(() => outstanding--);
          due += intervalMs;
        }
        if (due < now - 1000) due = now; // fell behind by over a second: do not burst
        setTimeout(tick, 1);
      };
      tick();
    });
  } else {
    const loop = async (): Promise<void> => {
      while (Date.now() < endAt) await one();
    };
    await Promise.all(Array.from({ length: options.inFlight }, loop));
  }
  client.close();
  return { calls, errors, latenciesUs, actions, wrongVerdicts, seconds: (Date.now() - started) / 1000 };
}

if (require.main === module) {
  const options = JSON.parse(process.argv[2] ?? "{}") as WorkerOptions;
  run(options).then(
    (result) => process.stdout.write(`${JSON.stringify(result)}\n`),
    (error: unknown) => {
      process.stderr.write(`load worker: ${String(error)}\n`);
      process.exit(1);
    },
  );
}
