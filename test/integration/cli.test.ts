/** The `greyfleet` command: start-up errors, `all` on the embedded store, help. */
import assert from "node:assert/strict";
import { once } from "node:events";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { rcpt } from "../support/engine";
import { GreyfleetProcess, runGreyfleet } from "../support/greyfleet-process";
import { healthStatus, TestClient } from "../support/grpc-clients";

describe("greyfleet command", () => {
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-cli-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("stops start-up on an invalid setting, naming it", async () => {
    const result = await runGreyfleet(["serve", "--delay", "five minutes", "--failure-mode", "closed"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /greyfleet serve: --delay: "five minutes" is not a duration/);
    assert.match(result.stderr, /greyfleet serve: --failure-mode: "closed" is not one of open, tempfail/);
  });

  it("reads a YAML file and GREYFLEET_* variables", async () => {
    const file = join(dir, "greyfleet.yaml");
    writeFileSync(file, "delay: 10m\nretry-window: 5m\n");
    const result = await runGreyfleet(["serve", "--config", file], { env: { GREYFLEET_MAX_AGE: "1d" } });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--retry-window \(300s\) must be longer than --delay \(600s\)/);
  });

  it("refuses a store URL it cannot serve, and a port in use", async () => {
    const bad = await runGreyfleet(["serve", "--store", "redis://", "--metrics-listen", ""]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--store: "" in the store URL is not HOST\[:PORT\]/);
    const sentinel = await runGreyfleet(["serve", "--store", "redis+sentinel://h:26379", "--metrics-listen", ""]);
    assert.equal(sentinel.code, 2);
    assert.match(sentinel.stderr, /--store: a redis\+sentinel:\/\/ store URL needs the master name/);
    const secret = await runGreyfleet(["serve", "--store-password", "hunter2", "--metrics-listen", ""]);
    assert.equal(secret.code, 2);
    assert.match(secret.stderr, /--store-password is a secret: set GREYFLEET_STORE_PASSWORD/);
    const typo = await runGreyfleet(["serve", "--metrics-listen", ""], {
      env: { GREYFLEET_STORE: "redis:/:s3cr3t@h:6379" },
    });
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /"redis:\/…@h:6379" is not a store URL/);
    assert.doesNotMatch(typo.stderr, /s3cr3t/, "a password in a mistyped URL is not printed");
    const blocker = createServer().listen(0, "127.0.0.1");
    await once(blocker, "listening");
    const taken = `127.0.0.1:${(blocker.address() as AddressInfo).port}`;
    const busy = await runGreyfleet(["serve", "--store", "memory:", "--listen", taken, "--metrics-listen", ""]);
    blocker.close();
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, new RegExp(`start-up failed.*--listen ${taken}`));
  });

  it("stops with exit 2 for a setting found unusable only when start-up uses it", async () => {
    for (const [args, problem] of [
      [
        ["serve", "--store", "memory:", "--internal-networks", "300.1.1.1"],
        /--internal-networks \\"300\.1\.1\.1\\": not an IP address/,
      ],
      [
        ["serve", "--store", "memory:", "--tls-cert-file", "/nonexistent.pem"],
        /--tls-cert-file and --tls-key-file go together/,
      ],
      [
        ["policy", "--decision-tls-cert-file", "/nonexistent.pem"],
        /--decision-tls-cert-file needs --decision-tls-ca-file/,
      ],
    ] as const) {
      const result = await runGreyfleet([...args, "--metrics-listen", ""]);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, problem);
    }
  });

  it("refuses unknown commands, and says so when the admin server cannot be reached", async () => {
    const unknown = await runGreyfleet(["frobnicate"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const past = await runGreyfleet(
      ["admin", "--server", "127.0.0.1:1", "add", "sender_whitelist", "a@example.org"].concat([
        "--expires",
        "1970-01-01T00:00:00Z",
      ]),
    );
    assert.equal(past.code, 2);
    assert.match(past.stderr, /--expires "1970-01-01T00:00:00Z" is in the past/);
    const unreachable = await runGreyfleet(["admin", "--server", "127.0.0.1:1", "stats"]);
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /^greyfleet admin: .*(ECONNREFUSED|No connection established)/);
  });

  it("prints help with every setting", async () => {
    const result = await runGreyfleet(["help", "serve"]);
    assert.equal(result.code, 0);
    for (const flag of ["--listen", "--store", "--delay", "--retry-window", "--max-age", "--failure-mode"]) {
      assert.ok(result.stdout.includes(flag), flag);
    }
  });

  it("`all` runs on the embedded store in ./data by default", async () => {
    const proc = await GreyfleetProcess.start(["all", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"], {
      cwd: dir,
    });
    const client = new TestClient(proc.grpcAddress);
    try {
      assert.equal(await healthStatus(proc.grpcAddress), "SERVING");
      assert.equal((await client.check(rcpt())).reason, Reason.REASON_NEW_TRIPLET);
      assert.ok(existsSync(join(dir, "data", "greyfleet.sqlite")));
      assert.equal(await proc.stop(), 0);
    } finally {
      client.close();
      await proc.stop("SIGKILL"); // a no-op once it exited
    }
  });
});
