/**
 * The decision service benchmark: the same Check load against a bare grpc-js echo server (the
 * ceiling), `greyfleet serve` on SQLite and `greyfleet serve` on Redis, in one run, their runs
 * taking turns. Targets are pinned to CPU 0 and the load generators (and Redis) to CPU 1, so each
 * target gets one core.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Redis from "ioredis";
import { CheckRequest } from "../services/contract/gen/greyfleet/v1/greylist";
import { projectFile } from "../services/shared/paths";
import { freePort } from "../test/support/ports";
import { H2GrpcClient } from "./h2-client";
import {
  canPin,
  cpuSeconds,
  failOnWrongVerdicts,
  median,
  percentile,
  printTable,
  runJsonWorker,
  type Started,
  startProcess,
} from "./lib";
import type { WorkerOptions, WorkerResult } from "./load-worker";
import { triplet } from "./mix";

/** Benchmark knobs, from the command line. */
export interface DecisionBenchOptions {
  readonly seconds: number;
  readonly inFlight: number;
  readonly workers: number;
  readonly runs: number;
  readonly knownTriplets: number;
}

const DELAY_SECONDS = 2;
/** Each target's unmeasured run before the measured ones: its code optimised, its heap grown. */
const WARM_UP_SECONDS = 4;
const WORKER = projectFile("dist/bench/load-worker.js");
const CLI = projectFile("dist/services/cli/main.js");

interface Measured {
  readonly callsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  readonly serverCores: number;
  readonly redisCores: number;
  readonly redisCallsPerDecision: number;
  readonly actions: Record<string, number>;
  readonly wrongVerdicts: number;
}

interface TargetResult {
  readonly name: string;
  readonly peak: Measured;
  readonly half: Measured;
  /** Calls in flight per load process that gave about half the peak rate. */
  readonly halfInFlight: number;
}

async function waitForGrpc(address: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      (await H2GrpcClient.open(address, "/")).close();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

function redisStats(info: string): { calls: Map<string, number>; cpu: number } {
  const calls = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_([a-z|]+):calls=(\d+)/gm)) calls.set(match[1] ?? "", Number(match[2]));
  const cpu = Number(/used_cpu_user:([\d.]+)/.exec(info)?.[1]) + Number(/used_cpu_sys:([\d.]+)/.exec(info)?.[1]);
  return { calls, cpu };
}

async function measure(
  address: string,
  server: Started,
  redis: Redis | undefined,
  options: DecisionBenchOptions,
): Promise<Measured> {
  const pid = server.child.pid ?? 0;
  const before = redis ? redisStats(await redis.info("all")) : undefined;
  const cpu0 = cpuSeconds(pid);
  const started = Date.now();
  const results = await Promise.all(
    Array.from({ length: options.workers }, (_, w) => {
      const worker: WorkerOptions = {
        target: address,
        workerId: w,
        inFlight: options.inFlight,
        seconds: options.seconds,
        rate: 0,
        knownTriplets: options.knownTriplets,
        delayMs: DELAY_SECONDS * 1000,
      };
      return runJsonWorker<WorkerResult>(WORKER, worker, canPin() ? 1 : undefined);
    }),
  );
  const elapsed = (Date.now() - started) / 1000;
  const serverCores = (cpuSeconds(pid) - cpu0) / elapsed;
  const latencies = results.flatMap((r) => r.latenciesUs).sort((a, b) => a - b);
  const calls = results.reduce((sum, r) => sum + r.calls, 0);
  const seconds = Math.max(...results.map((r) => r.seconds));
  const actions: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.actions)) actions[k] = (actions[k] ?? 0) + v;
  let redisCores = 0;
  let redisCallsPerDecision = 0;
  if (redis && before) {
    const after = redisStats(await redis.info("all"));
    redisCores = (after.cpu - before.cpu) / elapsed;
    let storeCalls = 0;
    for (const [command, count] of after.calls) {
      // Commands a script runs are counted too; only the client's own commands are round trips.
      if (command !== "evalsha" && command !== "eval") continue;
      storeCalls += count - (before.calls.get(command) ?? 0);
    }
    redisCallsPerDecision = storeCalls / calls;
  }
  return {
    callsPerSecond: calls / seconds,
    p50Ms: percentile(latencies, 50) / 1000,
    p99Ms: percentile(latencies, 99) / 1000,
    errors: results.reduce((sum, r) => sum + r.errors, 0),
    serverCores,
    redisCores,
    redisCallsPerDecision,
    actions,
    wrongVerdicts: results.reduce((sum, r) => sum + r.wrongVerdicts, 0),
  };
}

async function seedKnown(address: string, options: DecisionBenchOptions): Promise<void> {
  const seed = (): Promise<unknown> =>
    Promise.all(
      Array.from({ length: options.workers }, (_, w) =>
        runJsonWorker<WorkerResult>(WORKER, {
          target: address,
          workerId: w,
          inFlight: 16,
          seconds: 30,
          rate: 0,
          knownTriplets: options.knownTriplets,
          delayMs: DELAY_SECONDS * 1000,
          seed: true,
        } satisfies WorkerOptions),
      ),
    );
  await seed();
  await new Promise((resolve) => setTimeout(resolve, DELAY_SECONDS * 1000 + 200));
  await seed(); // the retry after the delay: these triplets are known from now on
}

/** A target started and warmed up, ready to be measured. */
interface Prepared {
  readonly name: string;
  readonly address: string;
  readonly server: Started;
  readonly redis: Redis | undefined;
  readonly peaks: Measured[];
}

async function prepare(
  name: string,
  start: (port: number) => Promise<Started>,
  redis: Redis | undefined,
  options: DecisionBenchOptions,
): Promise<Prepared> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const server = await start(port);
  try {
    await waitForGrpc(address);
    await seedKnown(address, options);
  } catch (error) {
    await server.stop();
    throw error;
  }
  return { name, address, server, redis, peaks: [] };
}

/**
 * The target's figures: its median peak run, and half load, the way MTAs load a policy service:
 * a closed loop (each session waits for its answer) with the concurrency whose throughput is
 * closest to half the peak from below.
 */
async function halfLoad(target: Prepared, options: DecisionBenchOptions): Promise<TargetResult> {
  const rates = target.peaks.map((m) => m.callsPerSecond);
  const peak = target.peaks.find((m) => m.callsPerSecond === median(rates)) ?? (target.peaks[0] as Measured);
  let halfInFlight = 1;
  for (let inFlight = 2; inFlight < options.inFlight; inFlight *= 2) {
    const probe = await measure(target.address, target.server, target.redis, {
      ...options,
      inFlight,
      seconds: 2,
      workers: 1,
    });
    if (probe.callsPerSecond > peak.callsPerSecond / 2) break;
    halfInFlight = inFlight;
  }
  const half = await measure(target.address, target.server, target.redis, {
    ...options,
    inFlight: halfInFlight,
    workers: 1,
  });
  process.stdout.write(
    `  ${target.name}: runs ${rates.map((r) => Math.round(r)).join(", ")} calls/s; ` +
      `half load: ${halfInFlight} in flight, ${Math.round(half.callsPerSecond)} calls/s\n`,
  );
  return { name: target.name, peak, half, halfInFlight };
}

function h2loadCeiling(address: string, options: DecisionBenchOptions): string {
  const body = CheckRequest.encode(triplet(0, 1, "known")).finish();
  const framed = Buffer.alloc(5 + body.length);
  framed.writeUInt32BE(body.length, 1);
  framed.set(body, 5);
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-h2load-"));
  writeFileSync(join(dir, "body"), framed);
  const args = [
    ...(canPin() ? ["-c", "1", "h2load"] : []),
    "-D",
    String(options.seconds),
    "-c",
    "1",
    "-m",
    String(options.inFlight),
    "-d",
    join(dir, "body"),
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
    `http://${address}/greyfleet.v1.GreylistService/Check`,
  ];
  const result = spawnSync(canPin() ? "taskset" : "h2load", args, { encoding: "utf8" });
  rmSync(dir, { recursive: true, force: true });
  const match = /finished in [^,]+, ([\d.]+) req\/s/.exec(result.stdout ?? "");
  return match?.[1] ? `${Math.round(Number(match[1]))} calls/s` : "h2load not available";
}

/** Runs the decision benchmark and prints its figures. */
export async function benchDecision(options: DecisionBenchOptions): Promise<void> {
  process.stdout.write(
    `decision service: ${options.workers} load processes x ${options.inFlight} calls in flight, ${options.seconds} s per run, ` +
      `median of ${options.runs} runs taking turns after a ${WARM_UP_SECONDS} s warm-up run each (vs echo: the median of the ratios to the echo run of the same turn); ` +
      `targets on CPU 0${canPin() ? "" : " (not pinned: taskset missing)"}\n`,
  );
  const redisPort = await freePort();
  const redisServer = await startProcess(
    "redis-server",
    ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    /Ready to accept connections/,
    canPin() ? 1 : undefined,
  );
  const redis = new Redis(redisPort, "127.0.0.1");
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-bench-"));
  const cpu = canPin() ? 0 : undefined;
  const serve = (store: string) => (port: number) =>
    startProcess(
      process.execPath,
      [
        CLI,
        "serve",
        "--store",
        store,
        "--listen",
        `127.0.0.1:${port}`,
        "--metrics-listen",
        "",
        "--log-level",
        "warn",
      ].concat(["--delay", `${DELAY_SECONDS}s`]),
      undefined, // --log-level warn prints nothing on start; waitForGrpc() polls the port
      cpu,
    );
  const prepared: Prepared[] = [];
  try {
    // Every target is up at once and the runs take turns (echo, sqlite, redis, echo, ...), so each
    // ratio to the echo server compares runs made minutes apart at most, on a shared machine
    // whose speed drifts.
    const echoServer = (port: number) =>
      startProcess(process.execPath, [projectFile("dist/bench/echo-server.js"), `127.0.0.1:${port}`], /listening/, cpu);
    prepared.push(await prepare("echo", echoServer, undefined, options));
    prepared.push(await prepare("sqlite", serve(`sqlite:${join(dir, "bench.sqlite")}`), undefined, options));
    prepared.push(await prepare("redis", serve(`redis://127.0.0.1:${redisPort}`), redis, options));
    for (const target of prepared) {
      await measure(target.address, target.server, target.redis, { ...options, seconds: WARM_UP_SECONDS });
    }
    for (let run = 0; run < options.runs; run++) {
      for (const target of prepared) {
        target.peaks.push(await measure(target.address, target.server, target.redis, options));
      }
    }
    const [echo, sqlite, onRedis] = [
      await halfLoad(prepared[0] as Prepared, options),
      await halfLoad(prepared[1] as Prepared, options),
      await halfLoad(prepared[2] as Prepared, options),
    ];
    const echoH2load = h2loadCeiling((prepared[0] as Prepared).address, options);
    /** The median over runs of a target's rate over the echo server's in the same turn. */
    const vsEcho = (index: number): number => {
      const echoRuns = (prepared[0] as Prepared).peaks;
      const runs = (prepared[index] as Prepared).peaks;
      return median(runs.map((m, run) => m.callsPerSecond / (echoRuns[run] as Measured).callsPerSecond));
    };
    const rows = [echo, sqlite, onRedis].map((t, index) => [
      t.name,
      String(Math.round(t.peak.callsPerSecond)),
      `${Math.round(vsEcho(index) * 100)}%`,
      t.peak.p50Ms.toFixed(2),
      t.peak.p99Ms.toFixed(2),
      t.peak.serverCores.toFixed(2),
      t.name === "redis" ? t.peak.redisCores.toFixed(2) : "-",
      t.name === "redis" ? t.peak.redisCallsPerDecision.toFixed(3) : "-",
      `${Math.round(t.half.callsPerSecond)} (${t.halfInFlight})`,
      t.half.p50Ms.toFixed(2),
      t.half.p99Ms.toFixed(2),
      String(t.peak.errors + t.half.errors),
    ]);
    process.stdout.write("\n");
    printTable(
      [
        "target",
        "calls/s",
        "vs echo",
        "p50 ms",
        "p99 ms",
        "server cores",
        "redis cores",
        "redis calls/decision",
        "half load calls/s (in flight)",
        "p50 ms",
        "p99 ms",
        "errors",
      ],
      rows,
    );
    const mix = onRedis.peak.actions;
    /** Wrong verdicts in every measured run of a target, peak and half load. */
    const wrong = (index: number, result: TargetResult): number =>
      (prepared[index] as Prepared).peaks.reduce((sum, m) => sum + m.wrongVerdicts, result.half.wrongVerdicts);
    const wrongVerdicts = { sqlite: wrong(1, sqlite), redis: wrong(2, onRedis) };
    process.stdout.write(
      `\nredis run mix: accept ${mix["1"] ?? 0}, defer ${mix["2"] ?? 0}, reject ${mix["3"] ?? 0}; ` +
        `wrong verdicts in the measured runs: redis ${wrongVerdicts.redis}, sqlite ${wrongVerdicts.sqlite}; ` +
        `echo via h2load (C client, one fixed body): ${echoH2load}\n`,
    );
    failOnWrongVerdicts("decision", wrongVerdicts);
  } finally {
    for (const target of prepared) await target.server.stop();
    redis.disconnect();
    await redisServer.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
