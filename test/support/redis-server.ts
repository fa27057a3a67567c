/**
 * A real redis-server for one test file: started on a free loopback port with no persistence,
 * stopped afterwards. Missing redis-server fails the test (npm test installs it).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import Redis from "ioredis";
import { freePort } from "./ports";
import { waitFor } from "./wait";

/** One redis-server process (server or sentinel) a test owns, on a known port. */
export class RedisProcess {
  /** The running process; undefined while stopped. */
  child: ChildProcess | undefined;

  constructor(
    readonly port: number,
    private readonly args: readonly string[],
  ) {}

  /** (Re)starts the process and waits until it answers PING; kills it if it never does. */
  async start(): Promise<void> {
    const child = spawn("redis-server", [...this.args], { stdio: ["ignore", "ignore", "inherit"] });
    this.child = child;
    const exited = new Promise<never>((_, reject) => {
      child.once("error", (error) => reject(new Error(`redis-server could not start: ${error.message}`)));
      child.once("exit", (code) => reject(new Error(`redis-server exited with ${code} on port ${this.port}`)));
    });
    exited.catch(() => {});
    try {
      await Promise.race([
        waitFor(`redis-server on port ${this.port}`, async () => {
          const client = this.client();
          try {
            return (await client.ping()) === "PONG";
          } finally {
            client.disconnect();
          }
        }),
        exited,
      ]);
    } catch (error) {
      await this.kill();
      throw error;
    }
  }

  /** SIGKILL (as abrupt as a crash), and waits for the exit. */
  async kill(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const gone = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await gone;
  }

  /** A plain client for inspecting keys; the caller disconnects it. */
  client(): Redis {
    const client = new Redis(this.port, "127.0.0.1", { maxRetriesPerRequest: 1, retryStrategy: () => null });
    client.on("error", () => {}); // connection errors surface as rejected commands
    return client;
  }
}

/** A standalone redis-server without persistence for one test file. */
export class RedisServer extends RedisProcess {
  private constructor(port: number) {
    super(
      port,
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].concat([
        "--protected-mode",
        "no",
      ]),
    );
  }

  /** Starts redis-server on a free port and waits until it answers PING. */
  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort());
    await server.restart();
    return server;
  }

  /** redis://127.0.0.1:<port> */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** (Re)starts the server on the same port. */
  restart(): Promise<void> {
    return this.start();
  }

  /** Stops the server (SIGKILL: as abrupt as a crash) and waits for it to exit. */
  stop(): Promise<void> {
    return this.kill();
  }
}

/** A key prefix no other test uses, so tests can share one server. */
export function uniquePrefix(): string {
  return `t${randomBytes(4).toString("hex")}:`;
}

/** The CLIENT LIST line of a connection whose EVALSHA one of `servers` holds (flags=b: blocked by CLIENT PAUSE). */
export async function heldEvalsha(servers: readonly Redis[]): Promise<string | undefined> {
  for (const server of servers) {
    const line = String(await server.call("CLIENT", "LIST"))
      .split("\n")
      .find((l) => / flags=b .* cmd=evalsha /.test(l));
    if (line) return line;
  }
  return undefined;
}

/**
 * Pauses writers on `servers`, asks `decide(1)` (held inside Redis), then `decide(2)`, and waits
 * until the second has reached Redis (the held connection's query buffer fills) while the first
 * is still unanswered; then unpauses and returns both answers.
 */
export async function decideTwiceWhileHeld<T>(
  servers: readonly Redis[],
  decide: (nth: 1 | 2) => Promise<T>,
): Promise<[T, T]> {
  try {
    for (const server of servers) await server.call("CLIENT", "PAUSE", "10000", "WRITE");
    const first = decide(1);
    await waitFor("the first decision to wait in Redis", () => heldEvalsha(servers));
    const second = decide(2);
    await waitFor(
      "the second decision to reach Redis before the first is answered",
      async () => Number(/ qbuf=(\d+) /.exec((await heldEvalsha(servers)) ?? "")?.[1] ?? 0) > 0,
    );
    for (const server of servers) await server.call("CLIENT", "UNPAUSE");
    return [await first, await second];
  } finally {
    for (const server of servers) await server.call("CLIENT", "UNPAUSE");
  }
}
