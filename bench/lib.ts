/** Benchmark helpers: child processes, CPU readings, percentiles, tables. */
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { availableParallelism } from "node:os";
import { createInterface } from "node:readline";

/** Whether `taskset` exists: targets are pinned to CPU 0 and load generators to CPU 1 with it. */
export function canPin(): boolean {
  try {
    readFileSync("/usr/bin/taskset");
    return true;
  } catch {
    return false;
  }
}

/** A child process the benchmark started, with its output lines. */
export interface Started {
  readonly child: ChildProcess;
  readonly lines: string[];
  stop(): Promise<void>;
}

/** Spawns `command` (pinned to `cpu` when given) and waits for a line matching `ready`, if given. */
export async function startProcess(
  command: string,
  args: readonly string[],
  ready: RegExp | undefined,
  cpu?: number,
): Promise<Started> {
  const [file, argv] = cpu === undefined ? [command, args] : ["taskset", ["-c", String(cpu), command, ...args]];
  const child = spawn(file, argv, { stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr])
    createInterface({ input: stream }).on("line", (l) => lines.push(l));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const deadline = Date.now() + 20_000;
  while (ready && !lines.some((line) => ready.test(line))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${command} ${args.join(" ")} did not start:\n${lines.join("\n")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return {
    child,
    lines,
    async stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** CPU seconds (user + system) a process has used so far, from /proc. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
  return ticks / 100;
}

/** The machine's CPU time so far in core-seconds, from /proc/stat: busy (user, nice, system, irq, softirq) and idle (idle, iowait). */
export interface MachineCpu {
  readonly busy: number;
  readonly idle: number;
}

/** Reads the machine's CPU time (all cores, every process and the kernel's own work). */
export function machineCpu(): MachineCpu {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
  const [user, nice, system, idle, iowait, irq, softirq] = line.split(/\s+/).slice(1, 8).map(Number);
  const ticks = (...values: (number | undefined)[]) => values.reduce<number>((sum, v) => sum + (v ?? 0), 0) / 100;
  return { busy: ticks(user, nice, system, irq, softirq), idle: ticks(idle, iowait) };
}

/**
 * What a run cost the whole machine (load generator, every process of the chain, the kernel's
 * loopback work): busy cores during it, CPU µs per request, and the rate the machine could reach
 * at that cost with every core busy (the CPU-bound ceiling of this chain on this machine).
 */
export interface MachineCost {
  readonly busyCores: number;
  readonly usPerRequest: number;
  readonly allCoresRate: number;
}

export function machineCost(before: MachineCpu, after: MachineCpu, requests: number): MachineCost {
  const busy = after.busy - before.busy;
  const cores = busy + after.idle - before.idle;
  const seconds = cores / availableParallelism();
  const usPerRequest = requests > 0 ? (busy / requests) * 1e6 : Number.NaN;
  return {
    busyCores: seconds > 0 ? busy / seconds : Number.NaN,
    usPerRequest,
    allCoresRate: (availableParallelism() * 1e6) / usPerRequest,
  };
}

/**
 * Sets an error exit status, after the figures are printed, when a greyfleet target answered any
 * question unlike a correct greylister: its figures would then measure a broken greylister.
 */
export function failOnWrongVerdicts(section: string, wrongByTarget: Readonly<Record<string, number>>): void {
  const wrong = Object.entries(wrongByTarget).filter(([, count]) => count > 0);
  if (wrong.length === 0) return;
  process.stderr.write(
    `${section}: wrong verdicts from ${wrong.map(([target, count]) => `${target} (${count})`).join(", ")}\n`,
  );
  process.exitCode = 1;
}

/** The p-th percentile (0..100) of sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

/** The median of values. */
export function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}

/** Prints rows as an aligned text table. */
export function printTable(header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padStart(widths[i] ?? 0)).join("  ");
  process.stdout.write(`${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n`);
  for (const row of rows) process.stdout.write(`${line(row)}\n`);
}

/** Runs `node script json` and parses the one JSON line it prints. */
export function runJsonWorker<T>(script: string, options: object, cpu?: number): Promise<T> {
  const args = [script, JSON.stringify(options)];
  const [file, argv] =
    cpu === undefined ? [process.execPath, args] : ["taskset", ["-c", String(cpu), process.execPath, ...args]];
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.once("exit", (code) => {
      if (code !== 0) reject(new Error(`${script} exited with ${code}`));
      else resolve(JSON.parse(out) as T);
    });
  });
}

/** Resolves once HOST:PORT accepts a TCP connection (at most 20 s). */
export async function waitForPort(address: string): Promise<void> {
  const colon = address.lastIndexOf(":");
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(Number(address.slice(colon + 1)), address.slice(0, colon), () => {
        socket.end();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${address} did not open`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
