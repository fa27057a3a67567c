/**
 * The shims' unix socket at start: a socket file left by a killed run is replaced, but one that
 * a running process still answers on is not taken over (a second instance started by mistake
 * must not steal the MTA's socket).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { createRegistry } from "../../services/shared/metrics";
import { listenShim } from "../../services/shared/shim-listener";
import { createShimMetrics } from "../../services/shared/shim-metrics";

const dir = mkdtempSync(join(tmpdir(), "greyfleet-listener-"));
const listen = (path: string) =>
  listenShim({
    listen: `unix:${path}`,
    idleTimeoutMs: 5_000,
    metrics: createShimMetrics(createRegistry("test"), "policy"),
    handle: (socket) => {
      socket.end();
      return { idle: () => Promise.resolve() };
    },
    onError: (error) => assert.fail(`no accept fails here: ${error.message}`),
  });

describe("shim unix socket at start", () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("replaces the socket file of a killed process", async () => {
    const path = join(dir, "stale.sock");
    const child = spawn(process.execPath, [
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`,
    ]);
    await new Promise((resolve) => child.stdout.once("data", resolve));
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    assert.ok(existsSync(path), "the killed process left its socket file");
    const listener = await listen(path);
    await listener.stop(1_000);
  });

  it("refuses a socket a running process answers on, and leaves it working", async () => {
    const path = join(dir, "live.sock");
    const first = await listen(path);
    try {
      const second = await listen(path).then(
        (taken) => taken,
        (error: Error) => error,
      );
      if (!(second instanceof Error)) await second.stop(1_000);
      assert.ok(second instanceof Error, "a second listener took the socket over");
      assert.match(second.message, /another process is listening on it/);
      // The first listener still has its socket and answers on it.
      await new Promise<void>((resolve, reject) => {
        const socket = connect({ path }, () => {
          socket.destroy();
          resolve();
        });
        socket.once("error", reject);
      });
    } finally {
      await first.stop(1_000);
    }
  });
});
