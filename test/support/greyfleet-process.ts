/**
 * A real greyfleet process (the compiled CLI) started by a test, with its log lines collected and
 * its listen addresses read from its start-up log.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { projectRoot } from "../../services/shared/paths";
import { waitFor } from "./wait";

/** The compiled `greyfleet` command. */
export const GREYFLEET_BIN = join(projectRoot(), "dist/services/cli/main.js");

/** A running greyfleet process. */
export class GreyfleetProcess {
  readonly lines: string[] = [];
  private readonly exit: Promise<number | null>;

  private constructor(
    readonly child: ChildProcess,
    readonly args: readonly string[],
  ) {
    this.exit = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream }).on("line", (line) => this.lines.push(line));
    }
  }

  /** Spawns `greyfleet <args>` and waits until `readyLine` appears in its log. */
  static async start(
    args: readonly string[],
    options: { readyLine?: RegExp; env?: NodeJS.ProcessEnv; cwd?: string } = {},
  ): Promise<GreyfleetProcess> {
    const child = spawn(process.execPath, [GREYFLEET_BIN, ...args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const proc = new GreyfleetProcess(child, args);
    const ready = options.readyLine ?? /msg="greyfleet started"/;
    try {
      await Promise.race([
        waitFor(`greyfleet ${args[0]} to start`, () => proc.lines.some((line) => ready.test(line)), 15_000),
        proc.exit.then((code) => {
          throw new Error(`greyfleet ${args.join(" ")} exited with ${code}:\n${proc.lines.join("\n")}`);
        }),
      ]);
    } catch (error) {
      child.kill("SIGKILL"); // never leave a half-started process behind
      throw error;
    }
    return proc;
  }

  /** The value of `key=` in the first log line matching `message`. */
  logged(message: RegExp, key: string): string {
    for (const line of this.lines) {
      if (!message.test(line)) continue;
      const match = new RegExp(`\\b${key}=("(?:[^"\\\\]|\\\\.)*"|\\S+)`).exec(line);
      if (match?.[1]) return match[1].startsWith('"') ? (JSON.parse(match[1]) as string) : match[1];
    }
    throw new Error(`no "${key}" logged with ${message}:\n${this.lines.join("\n")}`);
  }

  /** The gRPC address the decision service bound. */
  get grpcAddress(): string {
    return this.logged(/decision service listening/, "grpc");
  }

  /** The /metrics address. */
  get metricsAddress(): string {
    return this.logged(/metrics listening/, "metrics");
  }

  /** Sends `signal` and resolves with the exit code. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exit;
  }

  /** Resolves with the exit code when the process ends by itself. */
  exited(): Promise<number | null> {
    return this.exit;
  }
}

/** Runs `greyfleet <args>` to completion; returns exit code and output. */
export function runGreyfleet(
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [GREYFLEET_BIN, ...args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** The sum of the samples of `name` whose labels include `labels`, scraped from HOST:PORT/metrics. */
export async function scrapedMetric(
  address: string,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): Promise<number> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    const sample = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!sample || sample[1] !== name) continue;
    const have = new Map([...(sample[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => have.get(key) === value)) total += Number(sample[3]);
  }
  return total;
}
