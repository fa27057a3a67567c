/**
 * The milter shim driven by a real milter client: `miltertest` (OpenDKIM's milter test facility,
 * Debian package miltertest) runs the Lua scripts in test/e2e/miltertest/ against `greyfleet
 * milter` + `greyfleet serve` over TCP, and against `greyfleet all` on a unix socket. A script
 * fails by exiting non-zero after echoing "FAIL: ...". A missing miltertest fails the suite.
 * The one real wait is the greylisting delay (--delay 1s, measured by the service's own clock
 * with --store memory:) before retry-passes.lua.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { projectFile } from "../../services/shared/paths";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { waitFor } from "../support/wait";

const LOCAL: readonly string[] = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
/** Longest a script may run; each needs well under a second. */
const SCRIPT_TIMEOUT_MS = 20_000;

/** Fails, naming the package, when miltertest is not installed. */
function requireMiltertest(): void {
  const probe = spawnSync("miltertest", ["-V"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    const why = probe.error?.message ?? `exit ${probe.status}`;
    throw new Error(`miltertest is required (${why}): install the Debian package: apt-get install -y miltertest`);
  }
}

/** miltertest's socket syntax for a greyfleet listen address: inet:PORT@HOST or unix:/path. */
function sockinfo(listen: string): string {
  if (listen.startsWith("unix:")) return listen;
  const colon = listen.lastIndexOf(":");
  return `inet:${listen.slice(colon + 1)}@${listen.slice(0, colon)}`;
}

/** Runs test/e2e/miltertest/<script> against `listen`; fails with its output unless it exits 0. */
async function runScript(listen: string, script: string): Promise<string> {
  const args = [
    "-D",
    `MILTER=${sockinfo(listen)}`,
    "-D",
    `COMMON=${projectFile("test/e2e/miltertest/common.lua")}`,
    "-s",
    projectFile(`test/e2e/miltertest/${script}`),
  ];
  const child = spawn("miltertest", args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), SCRIPT_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (status) => resolve(status));
  }).finally(() => clearTimeout(timer));
  assert.equal(code, 0, `miltertest ${script} exited with ${code}:\n${output}`);
  return output;
}

async function protocolErrors(proc: GreyfleetProcess): Promise<string[]> {
  const text = await (await fetch(`http://${proc.metricsAddress}/metrics`)).text();
  return text.split("\n").filter((line) => line.startsWith("greyfleet_shim_protocol_errors_total{"));
}

// Counted as a failed test (the suites below only report their hooks as failed).
it("finds the miltertest command", () => requireMiltertest());

describe("miltertest against greyfleet milter and greyfleet serve", () => {
  let serve: GreyfleetProcess;
  let shim: GreyfleetProcess;
  let milter: string;

  before(async () => {
    requireMiltertest();
    serve = await GreyfleetProcess.start(["serve", "--store", "memory:", "--delay", "1s", ...LOCAL]);
    shim = await GreyfleetProcess.start(["milter", "--decision", serve.grpcAddress, ...LOCAL]);
    milter = shim.logged(/milter server listening/, "milter");
  });

  after(async () => {
    const codes = [await shim?.stop(), await serve?.stop()];
    assert.deepEqual(codes, [0, 0], "both exit cleanly on SIGTERM");
  });

  it("answers each new triplet's RCPT with SMFIR_REPLYCODE and goes on with the transaction", async () => {
    await runScript(milter, "new-triplet.lua");
  });

  it("continues the null sender at RCPT and answers DATA with SMFIR_REPLYCODE", async () => {
    await runScript(milter, "null-sender.lua");
  });

  it("continues an authenticated sender to end of message", async () => {
    await runScript(milter, "authenticated.lua");
  });

  it("starts over after ABORT and after end of message", async () => {
    await runScript(milter, "abort-and-second-message.lua");
  });

  it("continues the retry after the delay, defers a new recipient beside it, adds X-Greylist", async () => {
    const retryAfter = await waitFor("the first attempt's retry_after logged", () =>
      serve.logged(/msg=decision .*reason=new_triplet .*recipient=grey@example\.com\b/, "retry_after_s"),
    );
    await delay(Number(retryAfter) * 1000); // the one real wait (see the file comment)
    const output = await runScript(milter, "retry-passes.lua");
    assert.match(output, /^X-Greylist: delayed [12] seconds by greyfleet-/m);
  });

  it("saw no protocol error from miltertest", async () => {
    assert.deepEqual(await protocolErrors(shim), []);
  });
});

describe("miltertest against greyfleet all on a unix socket", () => {
  let all: GreyfleetProcess;
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-miltertest-"));
  const socket = `unix:${join(dir, "milter.sock")}`;

  before(async () => {
    requireMiltertest();
    all = await GreyfleetProcess.start([
      "all",
      "--store",
      "memory:",
      ...LOCAL,
      "--milter-listen",
      socket,
      "--policy-listen",
      "",
    ]);
  });

  after(async () => {
    const code = await all?.stop();
    rmSync(dir, { recursive: true, force: true });
    assert.equal(code, 0);
  });

  for (const script of ["new-triplet.lua", "null-sender.lua", "authenticated.lua", "abort-and-second-message.lua"]) {
    it(`passes ${script}`, async () => {
      await runScript(socket, script);
    });
  }

  it("saw no protocol error from miltertest", async () => {
    assert.deepEqual(await protocolErrors(all), []);
  });
});
