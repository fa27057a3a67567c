/**
 * The admin API and `greyfleet admin` against real decision services: list changes reach every
 * process on one Redis within 2 s, classic files import with a report of their bad lines, and a
 * dump from the embedded store restores into Redis with every decision reproduced.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type CheckRequest, Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { projectFile } from "../../services/shared/paths";
import { rcpt } from "../support/engine";
import { GreyfleetProcess, runGreyfleet } from "../support/greyfleet-process";
import { TestClient } from "../support/grpc-clients";
import { RedisServer, uniquePrefix } from "../support/redis-server";

const serve = (store: string, ...extra: string[]) =>
  GreyfleetProcess.start(["serve", "--store", store, "--listen", "127.0.0.1:0", "--metrics-listen", "", ...extra]);

describe("greyfleet admin", () => {
  let redis: RedisServer;
  let a: GreyfleetProcess;
  let b: GreyfleetProcess;
  let clientB: TestClient;
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-admin-"));
  const admin = (proc: GreyfleetProcess, ...args: string[]) =>
    runGreyfleet(["admin", "--server", proc.grpcAddress, ...args]);

  before(async () => {
    redis = await RedisServer.start();
    const prefix = uniquePrefix();
    // Settled, not Promise.all: a process that did start must be known to after() even if the other failed.
    const started = await Promise.allSettled([
      serve(redis.url, "--redis-key-prefix", prefix, "--default-whitelist", "off").then((proc) => (a = proc)),
      serve(redis.url, "--redis-key-prefix", prefix, "--default-whitelist", "off").then((proc) => (b = proc)),
    ]);
    for (const result of started) if (result.status === "rejected") throw result.reason;
    clientB = new TestClient(b.grpcAddress);
  });

  after(async () => {
    clientB?.close();
    await a?.stop();
    await b?.stop();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("applies a list change made through one process on another within 2 s", async () => {
    const request = rcpt({ clientAddress: "198.51.100.44" });
    assert.equal((await clientB.check(request)).reason, Reason.REASON_NEW_TRIPLET);
    const added = await admin(
      a,
      "add",
      "client_whitelist",
      "198.51.100.0/24",
      "--comment",
      "partner",
      "--expires",
      "7d",
    );
    assert.equal(added.code, 0, added.stderr);
    const changed = Date.now();
    let reason = Reason.REASON_UNSPECIFIED;
    while (Date.now() - changed < 2_000 && reason !== Reason.REASON_CLIENT_WHITELISTED) {
      reason = (await clientB.check(request)).reason;
    }
    assert.equal(reason, Reason.REASON_CLIENT_WHITELISTED, "B applied A's change within 2 s");
    const removed = await admin(b, "remove", "client_whitelist", "198.51.100.0/24");
    assert.equal(removed.code, 0, removed.stderr);
    const listed = await admin(a, "--json", "list", "client_whitelist");
    assert.deepEqual(JSON.parse(listed.stdout), []);
  });

  it("imports the classic formats and reports exactly the lines it could not parse", async () => {
    const fixtures = projectFile("test/fixtures/imports");
    const clients = await admin(a, "import", "postgrey-clients", join(fixtures, "postgrey_whitelist_clients.local"));
    assert.equal(clients.code, 1, "bad lines make the exit status 1");
    assert.match(clients.stdout, /^added \d+ entries from /);
    const reported = clients.stdout.split("\n").filter((line) => /\.local:\d+: /.test(line));
    assert.deepEqual(
      reported.map((line) => Number(/\.local:(\d+):/.exec(line)?.[1])),
      [19, 20, 21, 22, 23, 24],
    );
    const recipients = await admin(
      a,
      "--json",
      "import",
      "postgrey-recipients",
      join(fixtures, "postgrey_whitelist_recipients.local"),
    );
    const report = JSON.parse(recipients.stdout) as { added: number; problems: { line: number }[] };
    assert.ok(report.added > 0 && report.problems.length > 0, recipients.stdout);
    const prefixes = await admin(a, "import", "ip-prefixes", join(fixtures, "relaydelay-whitelist-ip.txt"));
    assert.match(prefixes.stdout, /^added \d+ entries/);
    const listed = await admin(b, "--json", "list", "client_whitelist");
    const values = (JSON.parse(listed.stdout) as { value: string }[]).map((e) => e.value);
    assert.ok(values.includes("10.20.0.0/16") && values.includes("203.0.113.64/26"), values.join(" "));
    assert.equal((await clientB.check(rcpt({ clientAddress: "10.20.3.4" }))).reason, Reason.REASON_CLIENT_WHITELISTED);
  });

  it("explains, deletes, flushes and counts, in tables and in JSON", async () => {
    const args = ["--client", "100.64.9.60", "--sender", "x@example.org", "--recipient", "y@example.com"];
    await clientB.check(rcpt({ clientAddress: "100.64.9.60", sender: "x@example.org", recipient: "y@example.com" }));
    const explained = await admin(a, "explain", ...args);
    assert.match(explained.stdout, /answer: +defer \(451 4\.7\.1 Greylisted/);
    assert.match(explained.stdout, /reason: +too_early/);
    const json = JSON.parse((await admin(a, "--json", "explain", ...args)).stdout) as { clientNetwork: string };
    assert.equal(json.clientNetwork, "100.64.9.0/24");
    assert.match((await admin(a, "stats")).stdout, /pending triplets +[1-9]/);
    assert.equal((await admin(a, "delete", ...args)).code, 0);
    assert.equal((await admin(a, "delete", ...args)).code, 1, "no such triplet any more");
    await clientB.check(rcpt({ clientAddress: "100.64.9.61", sender: "x@example.org", recipient: "z@example.com" }));
    assert.match((await admin(a, "flush", "100.64.9.1")).stdout, /^flushed 100\.64\.9\.0\/24: [1-9]\d* records/);
    assert.match((await admin(a, "flush", "100.64.9.0/24")).stdout, /^flushed 100\.64\.9\.0\/24: 0 records/);
    const wide = await admin(a, "flush", "100.64.0.0/8");
    assert.equal(wide.code, 1);
    assert.match(wide.stderr, /state is kept per \/24 network; give an address or 100\.64\.0\.0\/24/);
    const bad = await admin(a, "add", "greytrap", "example.com");
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /"example\.com": /);
    const usage = await admin(a, "add", "no_such_kind", "x");
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /unknown list kind "no_such_kind"/);
  });

  it("an export to a file that cannot be written ends with the reason, not a crash", async () => {
    const result = await admin(a, "export", join(dir, "no-such-directory", "dump.jsonl"));
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^greyfleet admin: cannot write .*no-such-directory\/dump\.jsonl: ENOENT/);
    assert.doesNotMatch(result.stderr, /node:events|Unhandled/);
  });

  it("imports a list file of the largest size, reporting bad lines by their number, and lists it", async () => {
    const service = await serve("memory:", "--default-whitelist", "off");
    try {
      const file = join(dir, "many.txt");
      const lines = Array.from({ length: 99_999 }, (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`);
      writeFileSync(file, `${[...lines.slice(0, 20_000), "300.1.1.1", ...lines.slice(20_000)].join("\n")}\n`);
      const imported = await admin(service, "import", "ip-prefixes", file);
      assert.equal(imported.code, 1, imported.stderr);
      assert.match(imported.stdout, /^added 99999 entries from /);
      assert.match(imported.stdout, new RegExp(`${file}:20001: .*: 300\\.1\\.1\\.1`));
      // Every entry in one ListEntries reply: far more than grpc-js takes by default (4 MiB).
      const listed = await admin(service, "--json", "list", "client_whitelist");
      assert.equal(listed.code, 0, listed.stderr);
      assert.ok(listed.stdout.length > 4 * 1024 * 1024, `${listed.stdout.length} bytes`);
      assert.equal(listed.stdout.match(/"value":/g)?.length, 99_999);
    } finally {
      await service.stop();
    }
  });

  it("imports from a path longer than an entry's source may be, keeping the path's end", async () => {
    const service = await serve("memory:", "--default-whitelist", "off");
    try {
      const deep = join(dir, "d".repeat(120), "e".repeat(120));
      mkdirSync(deep, { recursive: true });
      const file = join(deep, "relays.txt");
      writeFileSync(file, "192.0.2.0/24\n");
      const imported = await admin(service, "import", "ip-prefixes", file);
      assert.equal(imported.code, 0, imported.stderr);
      const listed = (await admin(service, "list", "client_whitelist")).stdout;
      const source = /192\.0\.2\.0\/24\s+-\s+(\S+)/.exec(listed)?.[1] ?? "";
      assert.match(source, /^import:…d+\/e{120}\/relays\.txt$/);
      assert.equal(Buffer.byteLength(source), 200);
    } finally {
      await service.stop();
    }
  });

  it("checks restored list entries as added ones: normalised, or refused naming the record", async () => {
    const line = (kind: string, value: string, comment = "") =>
      JSON.stringify({ entry: { kind: `LIST_KIND_${kind}`, value, source: "restore", comment } });
    const good = join(dir, "good-entries.jsonl");
    // An earlier version wrote an import's whole file path as the source: cut to 200 bytes, not refused.
    const longSource = JSON.stringify({
      entry: { kind: "LIST_KIND_CLIENT_BLACKLIST", value: "198.51.100.9", source: `import:/${"d".repeat(300)}/x.txt` },
    });
    writeFileSync(
      good,
      `${line("CLIENT_BLACKLIST", "203.0.113.77/24")}\n${line("SENDER_WHITELIST", "Boss@Example.COM")}\n${longSource}\n`,
    );
    const restored = await admin(a, "restore", good);
    assert.equal(restored.code, 0, restored.stderr);
    const listed = (await admin(a, "list")).stdout;
    assert.match(listed, /client_blacklist\s+203\.0\.113\.0\/24/);
    assert.match(listed, /sender_whitelist\s+boss@example\.com/);
    assert.match(listed, /198\.51\.100\.9\/32\s+-\s+import:\/d{192}\s/);
    assert.equal((await admin(a, "remove", "client_blacklist", "198.51.100.9")).code, 0);
    // As stored, so removable by what `list` shows.
    assert.equal((await admin(a, "remove", "client_blacklist", "203.0.113.0/24")).code, 0);
    assert.equal((await admin(a, "remove", "sender_whitelist", "boss@example.com")).code, 0);
    // `add` checks the same way.
    const escaped = await admin(a, "add", "sender_whitelist", "y@example.org", "--comment", "\u001b[2J");
    assert.equal(escaped.code, 1);
    assert.match(escaped.stderr, /"y@example\.org": comment has a control character/);
    // A cut-off last line: nothing is written, not even the good lines before it.
    const cut = join(dir, "cut.jsonl");
    writeFileSync(
      cut,
      `${line("SENDER_WHITELIST", "first@example.org")}\n${line("SENDER_WHITELIST", "x@e").slice(0, 30)}`,
    );
    const stopped = await admin(a, "restore", cut);
    assert.equal(stopped.code, 2);
    assert.match(stopped.stderr, /cut\.jsonl line 2: not a record/);
    assert.doesNotMatch((await admin(a, "list")).stdout, /first@example\.org/);
    // A line of JSON that is not a record is refused the same way, before anything is written.
    for (const notRecord of ["[1,2]", "{}", '"x"', '{"entrie":{}}', '{"entry":{},"block":{}}', '{"entry":7}']) {
      writeFileSync(cut, `${line("SENDER_WHITELIST", "first@example.org")}\n${notRecord}\n`);
      const refused = await admin(a, "restore", cut);
      assert.equal(refused.code, 2, notRecord);
      assert.match(refused.stderr, /cut\.jsonl line 2: not a record/, notRecord);
    }
    assert.doesNotMatch((await admin(a, "list")).stdout, /first@example\.org/);
    // An expiry that a restore of the export would refuse is refused when added.
    const far = await admin(a, "add", "client_whitelist", "192.0.2.0/24", "--expires", "9999-12-31");
    assert.equal(far.code, 2);
    assert.match(far.stderr, /later than the year 2200/);
    const escapedSource = JSON.stringify({
      entry: { kind: "LIST_KIND_SENDER_WHITELIST", value: "x@example.org", source: "\u001b]0;x\u0007" },
    });
    for (const [bad, problem] of [
      [escapedSource, /record 1: source has a control character/],
      [line("CLIENT_WHITELIST", "10.0.0.0/33"), /record 1: client_whitelist "10\.0\.0\.0\/33"/],
      [line("CLIENT_NAME_WHITELIST", "/(mx)\\1/"), /record 1: .*linear time/],
      [line("SENDER_WHITELIST", "x@example.org", "\u001b[2J"), /record 1: comment .* control character/],
    ] as const) {
      const file = join(dir, "bad-entry.jsonl");
      writeFileSync(file, `${bad}\n`);
      const refused = await admin(a, "restore", file);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, problem);
    }
  });

  it("restores a dump of the embedded store into Redis with every decision reproduced", async () => {
    const sqlite = await serve(`sqlite:${join(dir, "source.sqlite")}`, "--delay", "1s", "--default-whitelist", "off");
    const source = new TestClient(sqlite.grpcAddress);
    const clients = [source];
    let target: GreyfleetProcess | undefined;
    try {
      const requests = Array.from({ length: 6 }, (_, i) =>
        rcpt({ clientAddress: `203.0.${i}.9`, sender: `s${i}@example.org`, recipient: "r@example.com" }),
      );
      for (const request of requests) await source.check(request);
      for (const [kind, value] of [
        ["greytrap", "trap@example.com"],
        ["sender_whitelist", "friend@example.org"],
      ] as const) {
        const added = await runGreyfleet(["admin", "--server", sqlite.grpcAddress, "add", kind, value]);
        assert.equal(added.code, 0, `add ${kind} ${value}: ${added.stderr}`);
      }
      const trapped = await source.check(rcpt({ clientAddress: "203.0.99.1", recipient: "trap@example.com" }));
      assert.equal(trapped.reason, Reason.REASON_GREYTRAP_HIT, "the greytrap blocks 203.0.99.0/24 in the dump");
      const dump = join(dir, "dump.jsonl");
      const exported = await runGreyfleet(["admin", "--server", sqlite.grpcAddress, "export", dump]);
      assert.equal(exported.code, 0, exported.stderr);

      target = await serve(
        redis.url,
        "--redis-key-prefix",
        uniquePrefix(),
        "--delay",
        "1s",
        "--default-whitelist",
        "off",
      );
      const restored = await runGreyfleet(["admin", "--server", target.grpcAddress, "restore", dump]);
      assert.equal(restored.code, 0, restored.stderr);
      const count = /^imported (\d+) records, kept 0 the store held as new or newer, skipped 0 expired\n$/.exec(
        restored.stdout,
      )?.[1];
      assert.ok(count !== undefined && Number(count) > 0, restored.stdout);
      // The same dump again writes nothing: the store holds every record as new.
      const again = await runGreyfleet(["admin", "--server", target.grpcAddress, "restore", dump]);
      assert.equal(
        again.stdout,
        `imported 0 records, kept ${count} the store held as new or newer, skipped 0 expired\n`,
      );
      const restoredClient = new TestClient(target.grpcAddress);
      clients.push(restoredClient);
      // Each list probe names the reason only its restored entry (or the block it left) gives.
      const probes: [CheckRequest, Reason | undefined][] = [
        ...requests.map((request): [CheckRequest, undefined] => [request, undefined]),
        [rcpt({ clientAddress: "203.0.99.2", recipient: "someone@example.com" }), Reason.REASON_NETWORK_GREYTRAPPED],
        [rcpt({ sender: "friend@example.org" }), Reason.REASON_SENDER_WHITELISTED],
        [rcpt({ clientAddress: "198.51.100.99", recipient: "trap@example.com" }), Reason.REASON_GREYTRAP_HIT],
      ];
      for (const [probe, reason] of probes) {
        const [x, y] = await Promise.all([source.check(probe), restoredClient.check(probe)]);
        assert.deepEqual([y.action, y.reason], [x.action, x.reason], `${probe.clientAddress} ${probe.sender}`);
        if (reason !== undefined) assert.equal(y.reason, reason, `${probe.clientAddress} ${probe.sender}`);
      }
    } finally {
      for (const client of clients) client.close();
      await sqlite.stop();
      await target?.stop();
    }
  });
});
