/**
 * What OpenTelemetry tracing costs on the decision path: Postfix-style policy load through
 * `greyfleet policy` -> `greyfleet serve` with tracing off (no OTEL_* variables), on with every
 * trace sampled, and on with 1% sampled (parentbased_traceidratio), exporting OTLP/HTTP protobuf to
 * a sink this process runs on a free loopback port. Two figures per mode, on fresh processes,
 * modes interleaved run by run: the saturated rate (persistent connections, one request in flight
 * each) and the CPU time of both greyfleet processes per request at a fixed rate both modes keep
 * up with, so that batching and fixed costs are the same (the load and the sink are not counted).
 * With taskset, both greyfleet processes are pinned to CPU 0 and the saturating load to CPU 1.
 * First, in a child process per mode, the CPU time of the tracing helpers alone for one recipient
 * (its four spans and the traceparent round trip, exported through the real batch processor).
 *
 * Usage: npm run build && node dist/bench/tracing-overhead.js [--seconds 8] [--runs 3]
 * [--connections 16] [--rate 1000] [--store memory:|redis://HOST:PORT]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:http";
import { type AddressInfo, connect, type Socket } from "node:net";
import { parseArgs } from "node:util";
import { Action, Reason } from "../services/contract/gen/greyfleet/v1/greylist";
import { createLogger } from "../services/shared/logging";
import { projectFile } from "../services/shared/paths";
import * as tracing from "../services/shared/tracing";
import { freePort } from "../test/support/ports";
import { canPin, cpuSeconds, median, percentile, printTable, runJsonWorker, waitForPort } from "./lib";
import { Mix } from "./mix";
import { type PolicyWorkerOptions, type PolicyWorkerResult, postfixRequest } from "./policy-worker";

const CLI = projectFile("dist/services/cli/main.js");
const WORKER = projectFile("dist/bench/policy-worker.js");
const WARM_UP_SECONDS = 2;
const DELAY_SECONDS = 2;
const PIN = canPin();
/** Connections of the fixed-rate load (each with at most one request in flight). */
const FIXED_RATE_CONNECTIONS = 64;

/** The compared configurations: the OTEL_* variables each process gets. */
function modes(sink: string): Readonly<Record<string, NodeJS.ProcessEnv>> {
  const on = { OTEL_EXPORTER_OTLP_ENDPOINT: sink, OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" };
  return {
    off: {},
    "on, all sampled": on,
    "on, 1% sampled": { ...on, OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.01" },
  };
}

interface Measured {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** CPU µs per request of each process, at the fixed rate. */
  readonly serveCpuUs: number;
  readonly policyCpuUs: number;
  /** Requests the fixed-rate load could not send (every connection busy). */
  readonly late: number;
  readonly droppedSpanWarnings: number;
}

/** A greyfleet process with the given OTEL_* variables (and none of the caller's). */
function greyfleet(args: readonly string[], otel: NodeJS.ProcessEnv): { child: ChildProcess; lines: string[] } {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!name.startsWith("OTEL_")) env[name] = value;
  // taskset execs node: the child's pid is the greyfleet process's.
  const [file, argv] = PIN
    ? ["taskset", ["-c", "0", process.execPath, CLI, ...args]]
    : [process.execPath, [CLI, ...args]];
  const child = spawn(file, argv, { env: { ...env, ...otel }, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on("data", (chunk: Buffer) => lines.push(...chunk.toString().split("\n").filter(Boolean)));
  }
  return { child, lines };
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/** One policy connection answering a request at a time. */
function openPolicyConnection(address: string): Promise<{ ask(request: string): Promise<void>; close(): void }> {
  const colon = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(Number(address.slice(colon + 1)), address.slice(0, colon), () => {
      let buffered = "";
      let waiting: (() => void) | undefined;
      socket.setNoDelay(true);
      socket.setEncoding("utf8");
      socket.on("data", (chunk: string) => {
        buffered += chunk;
        if (!buffered.includes("\n\n")) return;
        buffered = buffered.slice(buffered.indexOf("\n\n") + 2);
        const done = waiting;
        waiting = undefined;
        done?.();
      });
      resolve({
        ask: (request) =>
          new Promise<void>((answered) => {
            waiting = answered;
            socket.write(request);
          }),
        close: () => socket.end(),
      });
    });
    socket.once("error", reject);
  });
}

/** Sends `rate` requests a second for `seconds`; resolves when all are answered. */
async function fixedRate(address: string, rate: number, seconds: number): Promise<{ answered: number; late: number }> {
  const idle = await Promise.all(Array.from({ length: FIXED_RATE_CONNECTIONS }, () => openPolicyConnection(address)));
  const all = [...idle];
  const mix = new Mix(1, 5_000, DELAY_SECONDS * 1000);
  const inFlight = new Set<Promise<void>>();
  let [sent, answered, late] = [0, 0, 0];
  const started = performance.now();
  await new Promise<void>((done) => {
    const tick = setInterval(() => {
      const elapsedSeconds = (performance.now() - started) / 1000;
      const due = Math.floor(Math.min(elapsedSeconds, seconds) * rate);
      for (; sent < due; sent++) {
        const connection = idle.pop();
        if (!connection) {
          late++;
          continue;
        }
        const asked = connection.ask(postfixRequest(mix.next())).then(() => {
          answered++;
          idle.push(connection);
          inFlight.delete(asked);
        });
        inFlight.add(asked);
      }
      if (elapsedSeconds >= seconds) {
        clearInterval(tick);
        done();
      }
    }, 2);
  });
  await Promise.all(inFlight);
  for (const connection of all) connection.close();
  return { answered, late };
}

async function measure(
  otel: NodeJS.ProcessEnv,
  store: string,
  options: { seconds: number; connections: number; rate: number },
): Promise<Measured> {
  const [grpcPort, policyPort] = [await freePort(), await freePort()];
  const quiet = ["--metrics-listen", "", "--log-level", "warn"];
  const serve = greyfleet(
    ["serve", "--store", store, "--listen", `127.0.0.1:${grpcPort}`, "--delay", `${DELAY_SECONDS}s`, ...quiet],
    otel,
  );
  const policy = greyfleet(
    ["policy", "--decision", `127.0.0.1:${grpcPort}`, "--listen", `127.0.0.1:${policyPort}`, ...quiet],
    otel,
  );
  const target = `127.0.0.1:${policyPort}`;
  try {
    await waitForPort(`127.0.0.1:${grpcPort}`);
    await waitForPort(target);
    const saturate = (seconds: number) =>
      runJsonWorker<PolicyWorkerResult>(
        WORKER,
        {
          target,
          workerId: 0,
          connections: options.connections,
          seconds,
          knownTriplets: 5_000,
          delayMs: DELAY_SECONDS * 1000,
        } satisfies PolicyWorkerOptions,
        PIN ? 1 : undefined,
      );
    // The fixed rate first: the saturated run's export backlog and garbage would be billed to it.
    await fixedRate(target, options.rate, WARM_UP_SECONDS);
    const pids = [serve.child.pid ?? 0, policy.child.pid ?? 0];
    const before = pids.map(cpuSeconds);
    const fixed = await fixedRate(target, options.rate, options.seconds);
    const [serveCpu = 0, policyCpu = 0] = pids.map((pid, i) => cpuSeconds(pid) - (before[i] ?? 0));
    await saturate(WARM_UP_SECONDS);
    const result = await saturate(options.seconds);
    const latencies = [...result.latenciesUs].sort((a, b) => a - b);
    return {
      requestsPerSecond: result.requests / result.seconds,
      p50Ms: percentile(latencies, 50) / 1000,
      p99Ms: percentile(latencies, 99) / 1000,
      serveCpuUs: (serveCpu / fixed.answered) * 1e6,
      policyCpuUs: (policyCpu / fixed.answered) * 1e6,
      late: fixed.late,
      droppedSpanWarnings: [...serve.lines, ...policy.lines].filter((line) => /[Dd]ropped/.test(line)).length,
    };
  } finally {
    await stop(policy.child);
    await stop(serve.child);
  }
}

/** Recipients traced per span-cost measurement (after as many to warm up). */
const SPAN_COST_RECIPIENTS = 100_000;

/**
 * In a child process (`--span-cost`): the helpers' CPU per recipient under this process's OTEL_*
 * variables, yielding every 100 recipients so the batch processor exports as it would.
 */
async function spanCost(): Promise<void> {
  const settings = tracing.tracingSettings(process.env, "bench");
  if ("problems" in settings) throw new Error(settings.problems.join("; "));
  if (settings.enabled) {
    const { startTracing } = await import("../services/shared/tracing-init.js");
    startTracing({ settings, log: createLogger({ level: "error", format: "text" }) });
  }
  const recipient = () => {
    const shim = tracing.startShimSpan("policy", "rcpt");
    const client = tracing.inSpan(shim, () => tracing.startClientSpan());
    const service = tracing.startServiceSpan("checkStream", tracing.traceparentOf(client));
    const store = tracing.inSpan(service, () => tracing.startStoreSpan("redis"));
    tracing.endStoreSpan(store, "new_triplet");
    tracing.endServiceSpan(service, { action: Action.ACTION_DEFER, reason: Reason.REASON_NEW_TRIPLET }, "redis");
    client?.end();
    tracing.noteShimDecision(shim, Reason.REASON_NEW_TRIPLET);
    tracing.endShimSpan(shim, "defer");
  };
  const run = async () => {
    for (let i = 0; i < SPAN_COST_RECIPIENTS; i++) {
      recipient();
      if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
    }
  };
  await run();
  const started = process.cpuUsage();
  await run();
  const used = process.cpuUsage(started);
  process.stdout.write(`${JSON.stringify({ cpuUs: (used.user + used.system) / SPAN_COST_RECIPIENTS })}\n`);
  process.exit(0);
}

/** The span cost of each mode, each in its own process (the SDK registers globally). */
async function spanCosts(configurations: [string, NodeJS.ProcessEnv][]): Promise<Map<string, number>> {
  const costs = new Map<string, number>();
  for (const [name, otel] of configurations) {
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("OTEL_")) env[key] = value;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, [__filename, "--span-cost"], {
        env: { ...env, ...otel },
        stdio: ["ignore", "pipe", "inherit"],
      });
      let text = "";
      child.stdout.on("data", (chunk: Buffer) => {
        text += chunk.toString();
      });
      child.once("exit", (code) => (code === 0 ? resolve(text) : reject(new Error(`span cost ${name}: exit ${code}`))));
    });
    costs.set(name, (JSON.parse(out) as { cpuUs: number }).cpuUs);
  }
  return costs;
}

async function main(): Promise<void> {
  if (process.argv.includes("--span-cost")) return spanCost();
  const { values } = parseArgs({
    options: {
      seconds: { type: "string", default: "8" },
      runs: { type: "string", default: "3" },
      connections: { type: "string", default: "16" },
      rate: { type: "string", default: "1000" },
      store: { type: "string", default: "memory:" },
    },
  });
  const number = (name: "seconds" | "runs" | "connections" | "rate"): number => {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} must be a positive whole number`);
    return value;
  };
  const options = { seconds: number("seconds"), connections: number("connections"), rate: number("rate") };
  const runs = number("runs");
  // The sink answers every export at once and keeps only counts.
  let posts = 0;
  let bytes = 0;
  const sink = createServer((request, response) => {
    request.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
    });
    request.on("end", () => {
      posts++;
      response.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
  const configurations = Object.entries(modes(endpoint));
  process.stdout.write(
    `tracing overhead: policy -> serve (${values.store}); saturated: ${options.connections} connections; ` +
      `CPU at ${options.rate} requests/s; ${options.seconds} s each; median of ${runs} runs, modes interleaved` +
      `${PIN ? "; greyfleet on CPU 0, load on CPU 1" : ""}\n`,
  );
  const costs = await spanCosts(configurations);
  for (const [name, cpuUs] of costs) {
    process.stdout.write(`  tracing helpers alone, ${name}: ${cpuUs.toFixed(2)} CPU µs per recipient (4 spans)\n`);
  }
  const results = new Map<string, Measured[]>(configurations.map(([name]) => [name, []]));
  try {
    for (let run = 0; run < runs; run++) {
      for (const [name, otel] of configurations) {
        const measured = await measure(otel, values.store, options);
        results.get(name)?.push(measured);
        process.stdout.write(
          `  run ${run + 1} ${name}: ${Math.round(measured.requestsPerSecond)} requests/s, ` +
            `${Math.round(measured.serveCpuUs + measured.policyCpuUs)} CPU µs/request\n`,
        );
      }
    }
  } finally {
    sink.close();
  }
  const medianOf = (name: string, field: (m: Measured) => number): number =>
    median((results.get(name) ?? []).map(field));
  const cpu = (m: Measured) => m.serveCpuUs + m.policyCpuUs;
  const offRate = medianOf("off", (m) => m.requestsPerSecond);
  const offCpu = medianOf("off", cpu);
  const change = (value: number, base: number) =>
    `${value >= base ? "+" : ""}${(((value - base) / base) * 100).toFixed(0)}%`;
  process.stdout.write(`\nsink: ${posts} OTLP exports, ${(bytes / 1e6).toFixed(1)} MB\n`);
  printTable(
    [
      "tracing",
      "requests/s",
      "vs off",
      "p50 ms",
      "p99 ms",
      `CPU µs/req at ${options.rate}/s: serve`,
      "policy",
      "both",
      "vs off",
      "late",
      "drop warnings",
    ],
    configurations.map(([name]) => {
      const rate = medianOf(name, (m) => m.requestsPerSecond);
      const both = medianOf(name, cpu);
      return [
        name,
        String(Math.round(rate)),
        change(rate, offRate),
        medianOf(name, (m) => m.p50Ms).toFixed(2),
        medianOf(name, (m) => m.p99Ms).toFixed(2),
        medianOf(name, (m) => m.serveCpuUs).toFixed(0),
        medianOf(name, (m) => m.policyCpuUs).toFixed(0),
        both.toFixed(0),
        change(both, offCpu),
        String(medianOf(name, (m) => m.late)),
        String(medianOf(name, (m) => m.droppedSpanWarnings)),
      ];
    }),
  );
}

main().catch((error: unknown) => {
  process.stderr.write(`tracing-overhead: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
