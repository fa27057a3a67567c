/**
 * The milter benchmark: Postfix's milter load (one connection per SMTP session, three
 * recipients per message, a few sessions at once) through the whole chain (load ->
 * `greyfleet milter` -> `greyfleet serve` -> Redis) and, in the same run with the same load,
 * against a bare stateless milter that answers by recipient name (the ceiling), and against
 * `greyfleet all` on the same Redis (shim and engine in one process: what the gRPC hop costs).
 */
import { projectFile } from "../services/shared/paths";
import { freePort } from "../test/support/ports";
import { type Chain, measureChain, startChain, startColocated, startRedis } from "./chain";
import {
  cpuSeconds,
  failOnWrongVerdicts,
  type MachineCost,
  machineCost,
  median,
  percentile,
  printTable,
  runJsonWorker,
  type Started,
  startProcess,
  waitForPort,
} from "./lib";
import type { MilterWorkerOptions, MilterWorkerResult } from "./milter-worker";

/** Benchmark knobs, from the command line. */
export interface MilterBenchOptions {
  readonly seconds: number;
  readonly sessions: number;
  readonly runs: number;
  readonly knownTriplets: number;
}

const DELAY_SECONDS = 2;
const WORKER = projectFile("dist/bench/milter-worker.js");

interface Measured {
  readonly sessionsPerSecond: number;
  readonly recipientsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuCores: number;
  readonly machine: MachineCost;
  readonly replies: Record<string, number>;
  readonly headers: number;
  /** In the run measured; benchTarget() returns the sum over all its runs. */
  readonly wrongVerdicts: number;
}

function worker(target: string, options: MilterBenchOptions, extra: Partial<MilterWorkerOptions>) {
  return runJsonWorker<MilterWorkerResult>(WORKER, {
    target,
    workerId: 0,
    sessions: options.sessions,
    seconds: options.seconds,
    knownTriplets: options.knownTriplets,
    delayMs: DELAY_SECONDS * 1000,
    ...extra,
  } satisfies MilterWorkerOptions);
}

async function benchTarget(
  name: string,
  target: string,
  processes: readonly Started[],
  options: MilterBenchOptions,
  namesTellVerdict = false,
): Promise<Measured> {
  await waitForPort(target);
  for (let pass = 0; pass < 2; pass++) {
    if (pass === 1) await new Promise((resolve) => setTimeout(resolve, DELAY_SECONDS * 1000 + 200));
    await worker(target, { ...options, seconds: 60 }, { seed: true, namesTellVerdict });
  }
  const runs: Measured[] = [];
  for (let run = 0; run < options.runs; run++) {
    const pids = processes.map((p) => p.child.pid ?? 0);
    const cpu0 = pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
    const started = Date.now();
    const result = await worker(target, options, { namesTellVerdict });
    const elapsed = (Date.now() - started) / 1000;
    const latencies = [...result.latenciesUs].sort((a, b) => a - b);
    runs.push({
      sessionsPerSecond: result.sessions / result.seconds,
      recipientsPerSecond: result.recipients / result.seconds,
      p50Ms: percentile(latencies, 50) / 1000,
      p99Ms: percentile(latencies, 99) / 1000,
      cpuCores: (pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) - cpu0) / elapsed,
      machine: machineCost(...result.machine, result.recipients),
      replies: result.replies,
      headers: result.headers,
      wrongVerdicts: result.wrongVerdicts,
    });
  }
  const rates = runs.map((m) => m.recipientsPerSecond);
  process.stdout.write(`  ${name}: runs ${rates.map((r) => Math.round(r)).join(", ")} recipients/s\n`);
  const medianRun = runs.find((m) => m.recipientsPerSecond === median(rates)) ?? (runs[0] as Measured);
  return { ...medianRun, wrongVerdicts: runs.reduce((sum, m) => sum + m.wrongVerdicts, 0) };
}

/** Runs the milter benchmark and prints its figures. */
export async function benchMilter(options: MilterBenchOptions): Promise<void> {
  process.stdout.write(
    `milter protocol: ${options.sessions} SMTP sessions at once, one milter connection each, ` +
      `3 recipients per message, ${options.seconds} s per run, median of ${options.runs} runs\n`,
  );
  const started: Started[] = [];
  try {
    const responderPort = await freePort();
    const responder = await startProcess(
      process.execPath,
      [projectFile("dist/bench/milter-responder.js"), `127.0.0.1:${responderPort}`],
      /listening/,
    );
    started.push(responder);
    const ceiling = await benchTarget(
      "bare milter responder",
      `127.0.0.1:${responderPort}`,
      [responder],
      options,
      true,
    );
    await responder.stop();

    const redis = await startRedis();
    started.push(redis.server);
    const bench = (name: string) => (chain: Chain) => benchTarget(name, chain.target, chain.processes, options);
    const chain = await measureChain(
      startChain("milter", redis, DELAY_SECONDS),
      bench("greyfleet (milter -> serve -> redis)"),
    );
    const colocated = await measureChain(
      startColocated("milter", redis, DELAY_SECONDS),
      bench("greyfleet all (milter and engine in one process -> redis)"),
    );

    process.stdout.write("\n");
    printTable(
      [
        "target",
        "sessions/s",
        "recipients/s",
        "vs bare",
        "p50 ms/rcpt",
        "p99 ms/rcpt",
        "CPU cores",
        "machine busy",
        "machine µs/rcpt",
        "all cores busy",
        "replies",
      ],
      (
        [
          ["bare responder", ceiling],
          ["greyfleet", chain],
          ["greyfleet all", colocated],
        ] as const
      ).map(([name, m]) => [
        name,
        String(Math.round(m.sessionsPerSecond)),
        String(Math.round(m.recipientsPerSecond)),
        `${(m.recipientsPerSecond / ceiling.recipientsPerSecond).toFixed(2)}x`,
        m.p50Ms.toFixed(2),
        m.p99Ms.toFixed(2),
        m.cpuCores.toFixed(2),
        m.machine.busyCores.toFixed(2),
        String(Math.round(m.machine.usPerRequest)),
        `${Math.round(m.machine.allCoresRate)} (${(m.machine.allCoresRate / ceiling.recipientsPerSecond).toFixed(2)}x)`,
        `${Object.entries(m.replies)
          .map(([kind, count]) => `${kind} ${count}`)
          .join(", ")}; X-Greylist ${m.headers}; wrong verdicts (measured runs) ${m.wrongVerdicts}`,
      ]),
    );
    failOnWrongVerdicts("milter", {
      "bare responder": ceiling.wrongVerdicts,
      greyfleet: chain.wrongVerdicts,
      "greyfleet all": colocated.wrongVerdicts,
    });
  } finally {
    for (const process of started.reverse()) await process.stop();
  }
}
