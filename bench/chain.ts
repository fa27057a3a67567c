/**
 * The greyfleet processes a shim benchmark measures, on one Redis: the fleet chain (the shim ->
 * `greyfleet serve` -> Redis), the same chain on the service's in-memory store (no Redis hop),
 * and the same shim with the engine in its own process (`greyfleet all` on Redis, no gRPC hop),
 * which show what each hop costs.
 */
import { projectFile } from "../services/shared/paths";
import { freePort } from "../test/support/ports";
import { type Started, startProcess, waitForPort } from "./lib";

const CLI = projectFile("dist/services/cli/main.js");
const QUIET = ["--metrics-listen", "", "--log-level", "warn"];

/** What a benchmark drives and whose CPU it counts. */
export interface Chain {
  /** HOST:PORT the shim listens on. */
  readonly target: string;
  /** Every process of the chain, Redis included. */
  readonly processes: readonly Started[];
  /** Stops the greyfleet processes of the chain (not Redis). */
  stop(): Promise<void>;
}

/** `measure` run on a started chain, which is stopped afterwards, also when measuring fails. */
export async function measureChain<T>(started: Promise<Chain>, measure: (chain: Chain) => Promise<T>): Promise<T> {
  const chain = await started;
  try {
    return await measure(chain);
  } finally {
    await chain.stop();
  }
}

/** A redis-server on a free loopback port, without persistence. */
export async function startRedis(): Promise<{ readonly server: Started; readonly url: string }> {
  const port = await freePort();
  const server = await startProcess(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    /Ready to accept connections/,
  );
  return { server, url: `redis://127.0.0.1:${port}` };
}

/**
 * `greyfleet <shim> --decision` -> `greyfleet serve` on `store`: a Redis, or `memory:` (no
 * server) for the chain without its Redis hop.
 */
export async function startChain(
  shim: "policy" | "milter",
  store: { readonly server?: Started; readonly url: string },
  delaySeconds: number,
): Promise<Chain> {
  const decision = `127.0.0.1:${await freePort()}`;
  const service = await startProcess(
    process.execPath,
    [CLI, "serve", "--store", store.url, "--listen", decision, "--delay", `${delaySeconds}s`, ...QUIET],
    undefined,
  );
  const started = [service];
  try {
    await waitForPort(decision);
    const target = `127.0.0.1:${await freePort()}`;
    started.push(
      await startProcess(
        process.execPath,
        [CLI, shim, "--decision", decision, "--listen", target, ...QUIET],
        undefined,
      ),
    );
    await waitForPort(target);
    return chain(target, started, store.server);
  } catch (error) {
    for (const process of started.reverse()) await process.stop();
    throw error;
  }
}

/** `greyfleet all` on `redis` with only `shim` listening: shim and engine in one process. */
export async function startColocated(
  shim: "policy" | "milter",
  redis: { readonly server: Started; readonly url: string },
  delaySeconds: number,
): Promise<Chain> {
  const target = `127.0.0.1:${await freePort()}`;
  const all = await startProcess(
    process.execPath,
    [CLI, "all", "--store", redis.url, "--redis-key-prefix", "colocated:", "--delay", `${delaySeconds}s`]
      .concat(["--listen", `127.0.0.1:${await freePort()}`, ...QUIET])
      .concat(["--policy-listen", shim === "policy" ? target : "", "--milter-listen", shim === "milter" ? target : ""]),
    undefined,
  );
  try {
    await waitForPort(target);
  } catch (error) {
    await all.stop();
    throw error;
  }
  return chain(target, [all], redis.server);
}

function chain(target: string, started: Started[], redis: Started | undefined): Chain {
  return {
    target,
    processes: redis ? [...started, redis] : started,
    async stop() {
      for (const process of [...started].reverse()) await process.stop();
    },
  };
}
