/**
 * deploy/postfix and deploy/sendmail: every variant of the main.cf snippet is read by the real
 * postconf(1) without a warning and agrees with the README; the sendmail .mc expands under m4 to
 * the README's filter; and the snippet's unix-socket lines work for real: a private Postfix with
 * them asks `greyfleet all` over sockets in its queue directory (group postfix, mode 0770, as
 * deploy/systemd sets them up) and defers a new triplet, by the policy and by the milter.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { projectFile } from "../../services/shared/paths";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { PostfixInstance } from "../support/postfix";
import { swaks } from "../support/swaks";

const SNIPPET = readFileSync(projectFile("deploy/postfix/main.cf.snippet"), "utf8");
const README = readFileSync(projectFile("README.md"), "utf8");
const QUEUE_DIR = "/var/spool/postfix";

/** The snippet's lines from the one starting with `from` up to the one starting with `to`. */
function block(from: string, to?: string): string[] {
  const lines = SNIPPET.split("\n");
  const start = lines.findIndex((line) => line.startsWith(from));
  const end = to === undefined ? lines.length : lines.findIndex((line) => line.startsWith(to));
  assert.ok(start !== -1 && end > start, `the snippet has a block "${from}"`);
  return lines.slice(start, end);
}

/** Commented-out parameter lines (and their continuations) made live; everything else dropped. */
function uncomment(lines: readonly string[], keep: (line: string) => boolean = () => true): string {
  return lines
    .filter((line) => /^#([a-z_]+ =|\s{4})/.test(line) && keep(line))
    .map((line) => line.slice(1))
    .join("\n");
}

const ACTIVE = SNIPPET.split("\n")
  .filter((line) => !line.startsWith("#"))
  .join("\n");
const POLICY_TCP = uncomment(block("# A over TCP", "# ---- B."));
const MILTER = block("# ---- B.");
const milter = (target: string) =>
  uncomment(MILTER, (line) => !line.startsWith("#smtpd_milters") || line === `#smtpd_milters = ${target}`);

/** The README's first code block after `heading`, or its `index`th. */
function readmeBlock(heading: string, index = 0): string {
  const section = README.slice(README.indexOf(heading));
  const blocks = [...section.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1] ?? "");
  assert.ok(blocks[index] !== undefined, `README: code block ${index} after ${heading}`);
  return blocks[index];
}

/** `postconf -n` of a main.cf: every parameter set, normalised; fails on any warning. */
function postconf(mainCf: string): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), "greyfleet-postconf-"));
  try {
    writeFileSync(join(dir, "main.cf"), mainCf);
    writeFileSync(join(dir, "master.cf"), "");
    // Postfix re-reads a main.cf younger than about 2 s until it is older; a backdated one is read once.
    const past = new Date(Date.now() - 60_000);
    for (const file of ["main.cf", "master.cf"]) utimesSync(join(dir, file), past, past);
    const result = spawnSync("postconf", ["-c", dir, "-n"], { encoding: "utf8" });
    if (result.error) throw new Error(`postconf: ${result.error.message} (apt-get install postfix)`);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stderr, "", "postconf warns about nothing (unused parameter, syntax)");
    const params: Record<string, string> = {};
    for (const line of result.stdout.trim().split("\n")) {
      const [name, value] = line.split(" = ", 2);
      if (name && name !== "config_directory") params[name] = value ?? "";
    }
    return params;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The arguments of every INPUT_MAIL_FILTER and define in an .mc text, as m4 reads them. */
function m4Calls(mc: string): string[] {
  const stub =
    "divert(-1)\ndefine(`INPUT_MAIL_FILTER', `divert(0)FILTER[$1][$2]\ndivert(-1)')\n" +
    "define(`define', `divert(0)DEFINE[$1][$2]\ndivert(-1)')\n";
  const result = spawnSync("m4", ["-"], { input: stub + mc, encoding: "utf8" });
  if (result.error) throw new Error(`m4: ${result.error.message} (apt-get install m4)`);
  assert.equal(result.status, 0, result.stderr);
  return result.stdout.split("\n").filter((line) => line !== "");
}

describe("deploy/postfix/main.cf.snippet", () => {
  it("sets policy delegation at RCPT and at DATA after reject_multi_recipient_bounce, on the unix socket, with default_action=DUNNO", () => {
    const params = postconf(ACTIVE);
    const service = "check_policy_service { unix:greyfleet/policy.sock, timeout=10s, default_action=DUNNO }";
    assert.deepEqual(params, {
      smtpd_recipient_restrictions: `permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, ${service}`,
      smtpd_data_restrictions: `reject_multi_recipient_bounce, ${service}`,
    });
  });

  it("has the README's policy and milter settings as its TCP variants", () => {
    assert.deepEqual(postconf(POLICY_TCP), postconf(readmeBlock("## Postfix: policy delegation")));
    assert.deepEqual(
      postconf(milter("inet:127.0.0.1:10030")),
      postconf(readmeBlock("## Postfix and sendmail: milter")),
    );
  });

  it("has milter variants for a chrooted and an unchrooted smtpd, failing open", () => {
    for (const target of ["unix:/greyfleet/milter.sock", `unix:${QUEUE_DIR}/greyfleet/milter.sock`]) {
      const params = postconf(milter(target));
      assert.equal(params.smtpd_milters, target);
      assert.equal(params.milter_default_action, "accept");
      assert.equal(params.milter_protocol, "6");
    }
  });
});

describe("deploy/sendmail/greyfleet.mc", () => {
  it("expands under m4 to the README's filter and macros", () => {
    const mc = readFileSync(projectFile("deploy/sendmail/greyfleet.mc"), "utf8");
    const calls = m4Calls(mc);
    assert.deepEqual(calls, m4Calls(readmeBlock("## Postfix and sendmail: milter", 1)));
    assert.ok(calls.includes("FILTER[greyfleet][S=inet:10030@127.0.0.1, F=, T=C:10s;S:10s;R:10s;E:5m]"));
  });
});

describe("the snippet's unix sockets with a real Postfix and greyfleet all", () => {
  const running: { stop(): Promise<unknown> }[] = [];
  const temp = mkdtempSync(join(tmpdir(), "greyfleet-mta-"));
  after(async () => {
    for (const item of running.reverse()) await item.stop();
    rmSync(temp, { recursive: true, force: true });
  });

  /** `parent`/greyfleet as deploy/systemd/greyfleet.conf makes it: group postfix, setgid, 2750. */
  function socketDir(parent: string): string {
    const dir = join(parent, "greyfleet");
    mkdirSync(dir);
    const postfixGid = Number(spawnSync("id", ["-g", "postfix"], { encoding: "utf8" }).stdout.trim());
    assert.ok(postfixGid > 0, "the postfix group exists");
    chownSync(dir, 0, postfixGid);
    chmodSync(dir, 0o2750);
    return dir;
  }

  /** greyfleet all with its shims on unix sockets ("" = off), under the units' UMask=0007. */
  async function greyfleetAll(policy: string, milter: string): Promise<void> {
    const umask = process.umask(0o007); // inherited by the child, as from UMask=0007
    try {
      const args = ["all", "--store", "memory:", "--listen", "127.0.0.1:0", "--metrics-listen", ""];
      running.push(await GreyfleetProcess.start([...args, "--policy-listen", policy, "--milter-listen", milter]));
    } finally {
      process.umask(umask);
    }
  }

  it("policy: `unix:greyfleet/policy.sock` (relative to the queue directory) reaches the shim; a new triplet waits", async () => {
    const postfix = await PostfixInstance.start({ mainCf: postconf(ACTIVE) });
    running.push(postfix);
    // Postfix connects at the first request, so the socket may come after Postfix.
    const dir = socketDir(join(postfix.dir, "run", "spool"));
    await greyfleetAll(`unix:${join(dir, "policy.sock")}`, "");
    const result = await swaks({ port: postfix.smtpPort, xclientAddr: "192.0.2.1", to: "bob@example.com" });
    const reply = result.rcpt[0]?.reply;
    assert.equal(reply?.code, 450, `${reply?.lines.join("\n")}\n${postfix.maillog()}`);
    assert.equal(reply?.enhancedCode, "4.7.1");
    assert.match(reply?.text ?? "", /Greylisted/);
  });

  it("milter: the unchrooted `unix:/var/spool/postfix/greyfleet/milter.sock` line (queue directory moved)", async () => {
    chmodSync(temp, 0o755);
    const dir = socketDir(temp);
    await greyfleetAll("", `unix:${join(dir, "milter.sock")}`);
    const params = postconf(milter(`unix:${QUEUE_DIR}/greyfleet/milter.sock`));
    const target = (params.smtpd_milters ?? "").replace(QUEUE_DIR, temp);
    const postfix = await PostfixInstance.start({ mainCf: { ...params, smtpd_milters: target } });
    running.push(postfix);
    const result = await swaks({ port: postfix.smtpPort, xclientAddr: "192.0.2.1", to: "bob@example.com" });
    const reply = result.rcpt[0]?.reply;
    assert.equal(reply?.code, 451, `${reply?.lines.join("\n")}\n${postfix.maillog()}`);
    assert.equal(reply?.enhancedCode, "4.7.1");
  });
});
