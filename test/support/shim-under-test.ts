/**
 * A policy or milter shim in this process, on a unix socket in a fresh directory, deciding with a
 * real engine over a memory store, and a raw client that sends bytes and collects what comes
 * back: what the hostile-input tests need to run thousands of connections quickly.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Registry } from "prom-client";
import { MemoryStore } from "../../services/decision/store/memory";
import { startMilterServer } from "../../services/milter/server";
import { startPolicyServer } from "../../services/policy/server";
import { createLogger } from "../../services/shared/logging";
import { createRegistry } from "../../services/shared/metrics";
import { ShimDecisions } from "../../services/shared/shim-decision";
import type { ShimListener } from "../../services/shared/shim-listener";
import { createShimMetrics } from "../../services/shared/shim-metrics";
import { testEngine } from "./engine";

export interface ShimUnderTest {
  /** "unix:/path" */
  readonly address: string;
  readonly path: string;
  readonly registry: Registry;
  readonly listener: ShimListener;
  /** Warnings and errors the shim logged. */
  readonly lines: string[];
  stop(): Promise<void>;
}

export async function startShimUnderTest(kind: "policy" | "milter", idleTimeoutMs = 5_000): Promise<ShimUnderTest> {
  const dir = mkdtempSync(join(tmpdir(), `greyfleet-${kind}-`));
  const path = join(dir, `${kind}.sock`);
  const registry = createRegistry("test");
  const lines: string[] = [];
  const log = createLogger({ level: "warn", format: "text" }, (line) => lines.push(line));
  const { engine } = testEngine(new MemoryStore());
  const metrics = createShimMetrics(registry, kind);
  const decisions = new ShimDecisions(engine, {
    shim: kind,
    timeoutMs: 1_000,
    failureMode: "open",
    failureLogIntervalMs: 60_000,
    metrics,
    log,
  });
  const common = { listen: `unix:${path}`, decisions, mtaId: "mx-test", idleTimeoutMs, metrics, log };
  const listener =
    kind === "policy"
      ? await startPolicyServer({ ...common, deferReply: "defer_if_permit" })
      : await startMilterServer(common);
  return {
    address: `unix:${path}`,
    path,
    registry,
    listener,
    lines,
    stop: async () => {
      await listener.stop(1_000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Connects to the unix socket `path`, writes `chunks` one by one, half-closes, and resolves with
 * every byte the server sent once it closed; rejects if the server has not closed within
 * `timeoutMs` (a hung connection).
 */
export function exchange(path: string, chunks: readonly Uint8Array[], timeoutMs = 5_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const received: Buffer[] = [];
    const socket = connect({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server did not close within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on("data", (chunk: Buffer) => received.push(chunk));
    socket.on("error", () => {}); // a reset by the server shows up as "close"
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(received));
    });
    socket.once("connect", () => {
      for (const chunk of chunks) socket.write(chunk);
      socket.end();
    });
  });
}
