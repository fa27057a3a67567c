/**
 * The policy benchmark: Postfix's load pattern (a few persistent connections, one request in
 * flight on each) through the whole chain (load -> `greyfleet policy` -> `greyfleet serve` ->
 * Redis) and, in the same run with the same load, against postgrey (Debian package, started here
 * on a free port with its own database directory); then the same load against `greyfleet all` on
 * the same Redis (shim and engine in one process), which shows what the gRPC hop costs, and the
 * chain on the service's in-memory store, which shows what the Redis hop costs. Nothing is
 * pinned: each side uses the machine as it would in production.
 */
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
import type { PolicyWorkerOptions, PolicyWorkerResult } from "./policy-worker";

/** Benchmark knobs, from the command line. */
export interface PolicyBenchOptions {
  readonly seconds: number;
  readonly connections: number;
  readonly runs: number;
  readonly knownTriplets: number;
}

const DELAY_SECONDS = 2;
const WORKER = projectFile("dist/bench/policy-worker.js");

interface Measured {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuCores: number;
  readonly machine: MachineCost;
  readonly actions: Record<string, number>;
  /** In the run measured; benchTarget() returns the sum over all its runs. */
  readonly wrongVerdicts: number;
}

function worker(target: string, options: PolicyBenchOptions, extra: Partial<PolicyWorkerOptions>) {
  return runJsonWorker<PolicyWorkerResult>(WORKER, {
    target,
    workerId: 0,
    connections: options.connections,
    seconds: options.seconds,
    knownTriplets: options.knownTriplets,
    delayMs: DELAY_SECONDS * 1000,
    ...extra,
  } satisfies PolicyWorkerOptions);
}

async function measure(target: string, processes: readonly Started[], options: PolicyBenchOptions): Promise<Measured> {
  const pids = processes.map((p) => p.child.pid ?? 0);
  const cpu0 = pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
  const started = Date.now();
  const result = await worker(target, options, {});
  const elapsed = (Date.now() - started) / 1000;
  const latencies = [...result.latenciesUs].sort((a, b) => a - b);
  return {
    requestsPerSecond: result.requests / result.seconds,
    p50Ms: percentile(latencies, 50) / 1000,
    p99Ms: percentile(latencies, 99) / 1000,
    cpuCores: (pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) - cpu0) / elapsed,
    machine: machineCost(...result.machine, result.requests),
    actions: result.actions,
    wrongVerdicts: result.wrongVerdicts,
  };
}

async function benchTarget(
  name: string,
  target: string,
  processes: readonly Started[],
  options: PolicyBenchOptions,
): Promise<Measured> {
  await waitForPort(target);
  await worker(target, { ...options, connections: 8, seconds: 60 }, { seed: true });
  await new Promise((resolve) => setTimeout(resolve, DELAY_SECONDS * 1000 + 200));
  await worker(target, { ...options, connections: 8, seconds: 60 }, { seed: true });
  const runs: Measured[] = [];
  for (let run = 0; run < options.runs; run++) runs.push(await measure(target, processes, options));
  const rates = runs.map((m) => m.requestsPerSecond);
  process.stdout.write(`  ${name}: runs ${rates.map((r) => Math.round(r)).join(", ")} requests/s\n`);
  const medianRun = runs.find((m) => m.requestsPerSecond === median(rates)) ?? (runs[0] as Measured);
  return { ...medianRun, wrongVerdicts: runs.reduce((sum, m) => sum + m.wrongVerdicts, 0) };
}

/** Runs the policy benchmark and prints its figures. */
export async function benchPolicy(options: PolicyBenchOptions): Promise<void> {
  process.stdout.write(
    `policy protocol: ${options.connections} persistent connections, one request in flight each, ` +
      `${options.seconds} s per run, median of ${options.runs} runs\n`,
  );
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-policy-bench-"));
  const started: Started[] = [];
  try {
    // postgrey drops privileges to its own user: its database directory must be that user's.
    chmodSync(dir, 0o755);
    const postgreyDb = join(dir, "postgrey");
    mkdirSync(postgreyDb);
    const uid = Number(execFileSync("id", ["-u", "postgrey"], { encoding: "utf8" }));
    const gid = Number(execFileSync("id", ["-g", "postgrey"], { encoding: "utf8" }));
    chownSync(postgreyDb, uid, gid);
    const postgreyPort = await freePort();
    const postgrey = await startProcess(
      "postgrey",
      [
        `--inet=127.0.0.1:${postgreyPort}`,
        `--dbdir=${postgreyDb}`,
        `--delay=${DELAY_SECONDS}`,
        `--pidfile=${join(dir, "postgrey.pid")}`,
      ],
      undefined,
    );
    started.push(postgrey);
    const baseline = await benchTarget("postgrey 1.37", `127.0.0.1:${postgreyPort}`, [postgrey], options);
    await postgrey.stop();

    const redis = await startRedis();
    started.push(redis.server);
    const bench = (name: string) => (chain: Chain) => benchTarget(name, chain.target, chain.processes, options);
    const chain = await measureChain(
      startChain("policy", redis, DELAY_SECONDS),
      bench("greyfleet (policy -> serve -> redis)"),
    );
    const memoryChain = await measureChain(
      startChain("policy", { url: "memory:" }, DELAY_SECONDS),
      bench("greyfleet on memory: (policy -> serve, no Redis hop)"),
    );
    const colocated = await measureChain(
      startColocated("policy", redis, DELAY_SECONDS),
      bench("greyfleet all (policy and engine in one process -> redis)"),
    );

    process.stdout.write("\n");
    printTable(
      [
        "target",
        "requests/s",
        "vs postgrey",
        "p50 ms",
        "p99 ms",
        "CPU cores (all its processes)",
        "machine busy",
        "machine µs/req",
        "all cores busy",
        "replies",
      ],
      [
        ["postgrey", baseline],
        ["greyfleet", chain],
        ["greyfleet on memory:", memoryChain],
        ["greyfleet all", colocated],
      ].map(([name, m]) => {
        const measured = m as Measured;
        return [
          name as string,
          String(Math.round(measured.requestsPerSecond)),
          `${(measured.requestsPerSecond / baseline.requestsPerSecond).toFixed(2)}x`,
          measured.p50Ms.toFixed(2),
          measured.p99Ms.toFixed(2),
          measured.cpuCores.toFixed(2),
          measured.machine.busyCores.toFixed(2),
          String(Math.round(measured.machine.usPerRequest)),
          `${Math.round(measured.machine.allCoresRate)} (${(measured.machine.allCoresRate / baseline.requestsPerSecond).toFixed(2)}x)`,
          `${Object.entries(measured.actions)
            .map(([action, count]) => `${action} ${count}`)
            .join(", ")}; wrong verdicts (measured runs) ${measured.wrongVerdicts}`,
        ];
      }),
    );
    failOnWrongVerdicts("policy", {
      greyfleet: chain.wrongVerdicts,
      "greyfleet on memory:": memoryChain.wrongVerdicts,
      "greyfleet all": colocated.wrongVerdicts,
    });
  } finally {
    for (const process of started.reverse()) await process.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
