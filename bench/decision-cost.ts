/**
 * What a change costs the decision path: the CPU time `greyfleet serve` spends per Check on the
 * Redis store at a fixed rate (one both builds keep up with, so batching and fixed costs are the
 * same), for this build and for a baseline build of an earlier commit, runs interleaved on fresh
 * processes. CPU per call at a fixed rate is steadier on a shared machine than a saturated rate.
 * With taskset, the service is pinned to CPU 0 and the load and Redis to CPU 1.
 *
 * A baseline is a checkout built with `npm run build` (its node_modules may be a link to this
 * one's), e.g. the commit before a feature:
 *   git worktree add /tmp/base <commit> && ln -s "$PWD/node_modules" /tmp/base/node_modules &&
 *   (cd /tmp/base && npm run build)
 *
 * Usage: npm run build && node dist/bench/decision-cost.js [--baseline DIR] [--rate 4000]
 * [--seconds 12] [--runs 5]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { projectFile } from "../services/shared/paths";
import { freePort } from "../test/support/ports";
import { canPin, cpuSeconds, median, printTable, runJsonWorker, startProcess, waitForPort } from "./lib";
import type { WorkerOptions, WorkerResult } from "./load-worker";

const WORKER = projectFile("dist/bench/load-worker.js");
const DELAY_SECONDS = 2;
const KNOWN_TRIPLETS = 5000;
const IN_FLIGHT = 64;

interface Measured {
  readonly cpuUsPerCall: number;
  readonly calls: number;
  readonly errors: number;
}

/** One run: fresh Redis and service from `tree`, seeded, then `seconds` at `rate` calls/s. */
async function measure(tree: string, rate: number, seconds: number): Promise<Measured> {
  const pin = canPin();
  const redisPort = await freePort();
  const redis = await startProcess(
    "redis-server",
    ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    /Ready to accept connections/,
    pin ? 1 : undefined,
  );
  const port = await freePort();
  const target = `127.0.0.1:${port}`;
  const serve = await startProcess(
    process.execPath,
    [
      join(tree, "dist/services/cli/main.js"),
      "serve",
      "--store",
      `redis://127.0.0.1:${redisPort}`,
      "--listen",
      target,
    ].concat(["--metrics-listen", "", "--log-level", "warn", "--delay", `${DELAY_SECONDS}s`]),
    undefined,
    pin ? 0 : undefined,
  );
  try {
    await waitForPort(target);
    const load = (extra: Partial<WorkerOptions>) =>
      runJsonWorker<WorkerResult>(
        WORKER,
        {
          target,
          workerId: 0,
          inFlight: IN_FLIGHT,
          seconds: 60,
          rate: 0,
          knownTriplets: KNOWN_TRIPLETS,
          delayMs: DELAY_SECONDS * 1000,
          ...extra,
        } satisfies WorkerOptions,
        pin ? 1 : undefined,
      );
    // Known triplets seen twice, a delay apart, so that they pass; this also warms the service up.
    await load({ seed: true });
    await new Promise((resolve) => setTimeout(resolve, DELAY_SECONDS * 1000 + 200));
    await load({ seed: true });
    const pid = serve.child.pid ?? 0;
    const before = cpuSeconds(pid);
    const result = await load({ seconds, rate });
    return {
      cpuUsPerCall: ((cpuSeconds(pid) - before) * 1e6) / result.calls,
      calls: result.calls,
      errors: result.errors,
    };
  } finally {
    await serve.stop();
    await redis.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      baseline: { type: "string", default: "" },
      rate: { type: "string", default: "4000" },
      seconds: { type: "string", default: "12" },
      runs: { type: "string", default: "5" },
    },
  });
  const number = (name: "rate" | "seconds" | "runs"): number => {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} must be a positive whole number`);
    return value;
  };
  const [rate, seconds, runs] = [number("rate"), number("seconds"), number("runs")];
  const trees: [string, string][] = [["this build", projectFile(".")]];
  if (values.baseline) trees.unshift(["baseline", values.baseline]);
  process.stdout.write(
    `decision cost: greyfleet serve on Redis, ${rate} Checks/s for ${seconds} s, ${IN_FLIGHT} in flight at most, ` +
      `median of ${runs} interleaved runs${canPin() ? "; service on CPU 0" : " (not pinned: taskset missing)"}\n`,
  );
  const measured = new Map<string, Measured[]>(trees.map(([name]) => [name, []]));
  for (let run = 0; run < runs; run++) {
    for (const [name, tree] of trees) {
      const m = await measure(tree, rate, seconds);
      measured.get(name)?.push(m);
      process.stdout.write(`  ${name}: ${m.cpuUsPerCall.toFixed(1)} µs/call (${m.calls} calls, ${m.errors} errors)\n`);
    }
  }
  const medians = trees.map(([name]) => median((measured.get(name) ?? []).map((m) => m.cpuUsPerCall)));
  const base = medians[0] ?? Number.NaN;
  process.stdout.write("\n");
  printTable(
    ["build", "CPU µs per Check (median)", "vs first", "errors"],
    trees.map(([name], i) => [
      name,
      (medians[i] ?? Number.NaN).toFixed(1),
      `${((((medians[i] ?? base) - base) / base) * 100).toFixed(1)}%`,
      String((measured.get(name) ?? []).reduce((sum, m) => sum + m.errors, 0)),
    ]),
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
