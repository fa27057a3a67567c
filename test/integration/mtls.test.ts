/**
 * mTLS between the shims and the decision service, and who may use AdminService: a shim with a
 * valid certificate decides, one without (or with a stranger's) is refused and falls back to its
 * failure mode, a shim's certificate cannot administer, an admin certificate or token can, and a
 * renewed server certificate is used without a restart (with or without client certificates).
 * A service that cannot start (port in use, empty token file) says why and exits.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect } from "node:tls";
import { TestCa } from "../support/certificates";
import { GREYFLEET_BIN, GreyfleetProcess, runGreyfleet } from "../support/greyfleet-process";
import { PolicyClient } from "../support/policy-client";
import { waitFor } from "../support/wait";

const DEFER = "action=DEFER_IF_PERMIT Greylisted, please try again later";

/** The subject CN of the certificate the service at `address` presents to a new connection. */
function servedName(address: string, caFile: string, client?: { certFile: string; keyFile: string }): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const [host, port] = address.split(":");
    const identity = client ? { cert: readFileSync(client.certFile), key: readFileSync(client.keyFile) } : {};
    const options = { host, port: Number(port), ca: readFileSync(caFile), servername: "decision.test" };
    const socket = connect({ ...options, ...identity, ALPNProtocols: ["h2"] }, () => {
      const cn = String(socket.getPeerCertificate().subject?.CN ?? "");
      socket.destroy();
      resolve(cn);
    });
    socket.once("error", reject);
  });
}

/** Renews the service's certificate files in place and waits until new connections get it. */
async function assertRenewalServed(
  ca: TestCa,
  server: { certFile: string; keyFile: string },
  served: () => Promise<string>,
): Promise<void> {
  assert.equal(await served(), "decision.test");
  const renewed = ca.issue("decision-renewed.test", ["DNS:decision.test", "IP:127.0.0.1"], "renewed");
  copyFileSync(renewed.certFile, server.certFile);
  copyFileSync(renewed.keyFile, server.keyFile);
  await waitFor("the renewed certificate to be served", async () => (await served()) === "decision-renewed.test");
}

/** Runs `greyfleet serve <args>` on the memory store, which must fail to start and exit by itself. */
function serveFailsToStart(args: readonly string[]): { status: number | null; output: string } {
  const result = spawnSync(
    process.execPath,
    [GREYFLEET_BIN, "serve", "--store", "memory:", "--metrics-listen", "", ...args],
    { encoding: "utf8", timeout: 15_000 },
  );
  assert.equal(result.signal, null, "it did not exit by itself: killed after 15 s");
  return { status: result.status, output: result.stdout + result.stderr };
}

describe("mTLS and admin credentials", () => {
  let ca: TestCa;
  let stranger: TestCa;
  let service: GreyfleetProcess;
  let server: { certFile: string; keyFile: string };
  const shims: GreyfleetProcess[] = [];

  before(async () => {
    ca = TestCa.create("greyfleet-test-ca");
    stranger = TestCa.create("someone-else");
    server = ca.issue("decision.test", ["DNS:decision.test", "IP:127.0.0.1"]);
    service = await GreyfleetProcess.start([
      "serve",
      "--store",
      "memory:",
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
      "--tls-cert-file",
      server.certFile,
      "--tls-key-file",
      server.keyFile,
      "--tls-client-ca-file",
      ca.certFile,
      "--admin-client-names",
      "ops.admin.test",
      "--tls-reload-interval",
      "1s",
    ]);
  });

  after(async () => {
    for (const shim of shims) await shim.stop();
    await service?.stop();
    rmSync(ca.dir, { recursive: true, force: true });
    rmSync(stranger.dir, { recursive: true, force: true });
  });

  async function shim(identity: { certFile: string; keyFile: string } | undefined): Promise<PolicyClient> {
    const proc = await GreyfleetProcess.start([
      "policy",
      "--decision",
      service.grpcAddress,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
      "--decision-tls-ca-file",
      ca.certFile,
      "--decision-timeout",
      "1s",
      ...(identity ? ["--decision-tls-cert-file", identity.certFile, "--decision-tls-key-file", identity.keyFile] : []),
    ]);
    shims.push(proc);
    return PolicyClient.open(proc.logged(/policy server listening/, "policy"));
  }

  it("lets a shim with a certificate from the fleet's CA decide", async () => {
    const client = await shim(ca.issue("mx1.shim.test"));
    assert.equal(await client.ask({ recipient: "mtls@example.com" }), DEFER);
    client.close();
  });

  it("refuses a shim without a certificate, or with a stranger's: it answers by its failure mode", async () => {
    for (const identity of [undefined, stranger.issue("mx9.shim.test")]) {
      const client = await shim(identity);
      assert.equal(await client.ask({ recipient: "refused@example.com" }), "action=DUNNO");
      client.close();
    }
  });

  const admin = (...args: string[]) =>
    runGreyfleet(["admin", "--server", service.grpcAddress, "--tls-ca-file", ca.certFile, ...args, "stats"]);

  it("does not let a shim's certificate administer, and does let an admin certificate", async () => {
    const shimCert = ca.issue("mx2.shim.test");
    const denied = await admin("--tls-cert-file", shimCert.certFile, "--tls-key-file", shimCert.keyFile);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /this credential may not use AdminService/);
    const adminCert = ca.issue("ops.admin.test");
    const allowed = await admin("--tls-cert-file", adminCert.certFile, "--tls-key-file", adminCert.keyFile);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stdout, /pending triplets/);
  });

  it("a second service with mTLS on a port in use fails to start, and exits", () => {
    const tls = ["--tls-cert-file", server.certFile, "--tls-key-file", server.keyFile];
    const result = serveFailsToStart(["--listen", service.grpcAddress, ...tls, "--tls-client-ca-file", ca.certFile]);
    assert.equal(result.status, 1, result.output);
    assert.match(result.output, /start-up failed/);
  });

  it("uses a renewed server certificate without a restart", async () => {
    const probe = ca.issue("probe.shim.test");
    await assertRenewalServed(ca, server, () => servedName(service.grpcAddress, ca.certFile, probe));
  });
});

describe("TLS without client certificates", () => {
  it("serves shims that verify it, and uses a renewed certificate without a restart", async () => {
    const ca = TestCa.create("greyfleet-tls-ca");
    const server = ca.issue("decision.test", ["DNS:decision.test", "IP:127.0.0.1"]);
    const service = await GreyfleetProcess.start([
      "serve",
      "--store",
      "memory:",
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "",
      "--tls-cert-file",
      server.certFile,
      "--tls-key-file",
      server.keyFile,
      "--tls-reload-interval",
      "1s",
    ]);
    const started: GreyfleetProcess[] = [service];
    try {
      const shim = await GreyfleetProcess.start([
        "policy",
        "--decision",
        service.grpcAddress,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "",
        "--decision-tls-ca-file",
        ca.certFile,
      ]);
      started.push(shim);
      const client = await PolicyClient.open(shim.logged(/policy server listening/, "policy"));
      assert.equal(await client.ask({ recipient: "tls@example.com" }), DEFER);
      client.close();
      await assertRenewalServed(ca, server, () => servedName(service.grpcAddress, ca.certFile));
    } finally {
      for (const proc of started.reverse()) await proc.stop();
      rmSync(ca.dir, { recursive: true, force: true });
    }
  });
});

describe("admin token", () => {
  it("refuses to start with an empty token file, which would leave AdminService open to loopback", () => {
    const dir = mkdtempSync(join(tmpdir(), "greyfleet-token-"));
    try {
      const file = join(dir, "token");
      writeFileSync(file, "\n");
      const result = serveFailsToStart(["--listen", "127.0.0.1:0", "--admin-token-file", file]);
      assert.equal(result.status, 2, result.output);
      assert.match(result.output, /--admin-token-file .*: the file is empty/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("admits the token's holder, refuses a wrong token as PERMISSION_DENIED and none as UNAUTHENTICATED", async () => {
    const service = await GreyfleetProcess.start(
      ["serve", "--store", "memory:", "--listen", "127.0.0.1:0", "--metrics-listen", ""],
      { env: { GREYFLEET_ADMIN_TOKEN: "s3cret-token" } },
    );
    const dumpDir = mkdtempSync(join(tmpdir(), "greyfleet-admin-"));
    try {
      const stats = (token: string | undefined) =>
        runGreyfleet(["admin", "--server", service.grpcAddress, "stats"], {
          env: token === undefined ? { GREYFLEET_ADMIN_TOKEN: "" } : { GREYFLEET_ADMIN_TOKEN: token },
        });
      const none = await stats(undefined);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /needs an admin token or an admin client certificate/);
      const wrong = await stats("guess");
      assert.match(wrong.stderr, /this credential may not use AdminService/);
      assert.equal((await stats("s3cret-token")).code, 0);
      // Every AdminService method, not only Stats: each refuses a caller without the token.
      const dump = join(dumpDir, "state.jsonl");
      writeFileSync(dump, '{"entry":{"kind":"LIST_KIND_CLIENT_WHITELIST","value":"0.0.0.0/1","source":"x"}}\n');
      const triplet = ["--client", "192.0.2.1", "--sender", "a@example.org", "--recipient", "b@example.com"];
      for (const command of [
        ["list"],
        ["add", "client_whitelist", "0.0.0.0/1"],
        ["remove", "client_whitelist", "192.0.2.0/24"],
        ["explain", ...triplet],
        ["delete", ...triplet],
        ["flush", "192.0.2.1"],
        ["export"],
        ["restore", dump],
      ]) {
        const refused = await runGreyfleet(["admin", "--server", service.grpcAddress, ...command], {
          env: { GREYFLEET_ADMIN_TOKEN: "" },
        });
        assert.match(refused.stderr, /needs an admin token or an admin client certificate/, command.join(" "));
      }
      const listed = await runGreyfleet(["admin", "--server", service.grpcAddress, "list", "client_whitelist"], {
        env: { GREYFLEET_ADMIN_TOKEN: "s3cret-token" },
      });
      assert.doesNotMatch(listed.stdout, /0\.0\.0\.0\/1/, "nothing was written without the token");
    } finally {
      await service.stop();
      rmSync(dumpDir, { recursive: true, force: true });
    }
  });
});
