/**
 * A real Prometheus for one test file (Debian package `prometheus`, which also holds promtool):
 * started on a free loopback port with its own storage directory and configuration, asked through
 * its HTTP API, stopped afterwards. Missing, it fails the test with the package to install.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { projectRoot } from "../../services/shared/paths";
import { freePort } from "./ports";
import { waitFor } from "./wait";

/** One sample of an instant vector. */
export interface Sample {
  readonly metric: Readonly<Record<string, string>>;
  /** Evaluation time (epoch seconds) and value as Prometheus writes it ("1", "NaN", "+Inf"). */
  readonly value: readonly [number, string];
}

interface ApiResponse<T> {
  readonly status: "success" | "error";
  readonly error?: string;
  readonly data: T;
}

/** Fails, naming the package, when promtool or prometheus is not installed. */
export function requirePrometheus(): void {
  for (const command of ["promtool", "prometheus"]) {
    const probe = spawnSync(command, ["--version"], { encoding: "utf8" });
    if (probe.error || probe.status !== 0) {
      const why = probe.error?.message ?? `exit ${probe.status}`;
      throw new Error(`${command} is required (${why}): install the Debian package: apt-get install -y prometheus`);
    }
  }
}

/** Runs promtool in the project's top directory; fails with its output unless it exits 0. */
export function promtool(...args: string[]): string {
  const result = spawnSync("promtool", args, { cwd: projectRoot(), encoding: "utf8" });
  const output = `${result.stdout}${result.stderr}`;
  assert.equal(result.status, 0, `promtool ${args.join(" ")} exited with ${result.status}:\n${output}`);
  return output;
}

/** A Prometheus server the test owns, on a free loopback port with its own storage in `dir`. */
export class Prometheus {
  /** Its log (stderr) lines. */
  readonly lines: string[] = [];
  private readonly exit: Promise<number | null>;

  private constructor(
    private readonly child: ChildProcess,
    readonly address: string,
  ) {
    this.exit = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    if (child.stderr) createInterface({ input: child.stderr }).on("line", (line) => this.lines.push(line));
  }

  /** Starts prometheus with `config` (YAML), its files in `dir`, and waits until it is ready. */
  static async start(dir: string, config: string): Promise<Prometheus> {
    const configFile = join(dir, "prometheus.yml");
    writeFileSync(configFile, config);
    const address = `127.0.0.1:${await freePort()}`;
    const child = spawn(
      "prometheus",
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=${address}`,
        "--log.level=warn",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    const server = new Prometheus(child, address);
    try {
      await Promise.race([
        waitFor("prometheus to be ready", async () => (await fetch(`http://${address}/-/ready`)).ok, 20_000, 100),
        server.exit.then((code) => {
          throw new Error(`prometheus exited with ${code}:\n${server.lines.join("\n")}`);
        }),
      ]);
    } catch (error) {
      child.kill("SIGKILL");
      throw error;
    }
    return server;
  }

  /** GET /api/v1/<path>; rejects on an API error. */
  async api<T>(path: string, params: Readonly<Record<string, string>> = {}): Promise<T> {
    const url = new URL(`http://${this.address}/api/v1/${path}`);
    for (const [key, value] of Object.entries(params)) url.searchParams.append(key, value);
    const body = (await (await fetch(url)).json()) as ApiResponse<T>;
    if (body.status !== "success") throw new Error(`${path} ${JSON.stringify(params)}: ${body.error}`);
    return body.data;
  }

  /** The instant vector `expr` evaluates to now. */
  async query(expr: string): Promise<Sample[]> {
    const data = await this.api<{ resultType: string; result: Sample[] }>("query", { query: expr });
    if (data.resultType !== "vector") throw new Error(`${expr}: a ${data.resultType}, not a vector`);
    return data.result;
  }

  /** SIGTERM; resolves when it has exited. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGTERM");
    await this.exit;
  }
}
