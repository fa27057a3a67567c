/** `greyfleet serve` on the embedded store keeps its greylist across a restart and a kill -9. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { rcpt } from "../support/engine";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { healthStatus, TestClient } from "../support/grpc-clients";

describe("sqlite store across restarts", () => {
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-sqlite-"));
  const args = [
    "serve",
    "--store",
    `sqlite:${join(dir, "grey.sqlite")}`,
    "--listen",
    "127.0.0.1:0",
    "--metrics-listen",
    "",
  ];
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function withService<T>(body: (client: TestClient, proc: GreyfleetProcess) => Promise<T>): Promise<T> {
    const proc = await GreyfleetProcess.start(args);
    const client = new TestClient(proc.grpcAddress);
    try {
      return await body(client, proc);
    } finally {
      client.close();
      await proc.stop("SIGKILL"); // a no-op once the body stopped it; else a failed body left it running
    }
  }

  it("remembers a triplet after SIGTERM and restart", async () => {
    const request = rcpt({ recipient: "restart@example.com" });
    await withService(async (client, proc) => {
      assert.equal(await healthStatus(proc.grpcAddress), "SERVING");
      assert.equal((await client.check(request)).reason, Reason.REASON_NEW_TRIPLET);
      assert.equal(await proc.stop("SIGTERM"), 0);
    });
    await withService(async (client, proc) => {
      assert.equal((await client.check(request)).reason, Reason.REASON_TOO_EARLY, "not new: the state survived");
      await proc.stop();
    });
  });

  it("remembers a triplet recorded just before a kill -9", async () => {
    const request = rcpt({ recipient: "kill9@example.com" });
    await withService(async (client, proc) => {
      assert.equal((await client.check(request)).reason, Reason.REASON_NEW_TRIPLET);
      await proc.stop("SIGKILL");
    });
    await withService(async (client, proc) => {
      assert.equal((await client.check(request)).reason, Reason.REASON_TOO_EARLY);
      await proc.stop();
    });
  });
});
