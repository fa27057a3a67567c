/**
 * deploy/systemd: every unit passes `systemd-analyze verify` without a word, stays within an
 * exposure bound of `systemd-analyze security --offline`, is sandboxed as promised and starts the
 * command with settings greyfleet accepts; the tmpfiles.d and sysusers.d snippets make the socket
 * directory as described; and the socket permission model (setgid directory, socket mode 0660) lets the
 * postfix user, and only it, connect to a real shim's socket. Works without systemd as PID 1.
 * Needs root (setpriv to act as postfix) and the postfix user (Debian's postfix package).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isConfigProblem, loadConfig } from "../../services/shared/config";
import { projectFile } from "../../services/shared/paths";
import type { Command } from "../../services/shared/settings";
import { GREYFLEET_BIN } from "../support/greyfleet-process";
import { freePort } from "../support/ports";
import { waitFor } from "../support/wait";

const UNITS = [
  { file: "greyfleet-policy.service", command: "policy", socket: "policy.sock" },
  { file: "greyfleet-milter.service", command: "milter", socket: "milter.sock" },
  { file: "greyfleet.service", command: "all", socket: "policy.sock" },
] as const;
const SOCKET_DIR = "/var/spool/postfix/greyfleet";
const INSTALL = "/opt/greyfleet/dist/services/cli/main.js";
/** `systemd-analyze security` rates 0 (safe) to 10 (unsafe); these units reach about 1.3. */
const MAX_EXPOSURE = 2.0;
/** nobody:nogroup on Debian. */
const NOBODY = "65534";

/** Unit file -> section -> key -> every value given (in order). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header?.[1]) {
      current = new Map();
      sections.set(header[1], current);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(current && eq > 0, `not a unit file line: ${line}`);
    const key = line.slice(0, eq);
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

function run(command: string, args: readonly string[]): { status: number | null; output: string } {
  const result = spawnSync(command, args, { encoding: "utf8", timeout: 60_000 });
  if (result.error) throw new Error(`${command}: ${result.error.message} (is systemd installed?)`);
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** Connects to a unix socket as user:group (setpriv, no supplementary groups): "connected" or the errno code. */
function connectAs(user: string, group: string, path: string): string {
  const script = `const s=require("net").connect(process.argv[1]);s.on("connect",()=>{console.log("connected");s.destroy()});s.on("error",(e)=>console.log(e.code))`;
  const result = spawnSync(
    "setpriv",
    [`--reuid=${user}`, `--regid=${group}`, "--clear-groups", process.execPath, "-e", script, path],
    { encoding: "utf8", timeout: 10_000 },
  );
  assert.equal(result.status, 0, `setpriv as ${user}: ${result.stderr}`);
  return result.stdout.trim();
}

function gidOf(group: string, groupFile = "/etc/group"): number {
  const line = readFileSync(groupFile, "utf8")
    .split("\n")
    .find((l) => l.startsWith(`${group}:`));
  assert.ok(line, `group ${group} in ${groupFile} (Debian's postfix package makes it)`);
  return Number(line.split(":")[2]);
}

for (const unit of UNITS) {
  describe(`deploy/systemd/${unit.file}`, () => {
    const path = projectFile(`deploy/systemd/${unit.file}`);
    const service = parseUnit(readFileSync(path, "utf8")).get("Service") ?? new Map<string, string[]>();
    const one = (key: string): string => {
      const values = service.get(key);
      assert.ok(values?.length === 1, `exactly one ${key}= (found ${values?.length ?? 0})`);
      return values[0] as string;
    };

    it("passes systemd-analyze verify without a warning", () => {
      // --man=no: no man(1) lookups for Documentation=; verify needs ExecStart's binary (/usr/bin/node).
      const { status, output } = run("systemd-analyze", ["verify", "--man=no", path]);
      assert.equal(status, 0, output);
      assert.equal(output.trim(), "", "unknown keys and bad values are only warnings: none allowed");
    });

    it(`has an overall exposure of at most ${MAX_EXPOSURE} (systemd-analyze security --offline)`, () => {
      const { status, output } = run("systemd-analyze", ["security", "--offline=yes", path]);
      assert.equal(status, 0, output);
      const match = /Overall exposure level for \S+: (\d+\.\d+)/.exec(output);
      assert.ok(match?.[1], output);
      assert.ok(Number(match[1]) <= MAX_EXPOSURE, `exposure ${match[1]}:\n${output}`);
    });

    it("runs node from /opt/greyfleet as the greyfleet user, sandboxed", () => {
      assert.equal(one("User"), "greyfleet");
      assert.match(one("ExecStart"), new RegExp(`^/usr/bin/node ${INSTALL} \\S+$`));
      assert.equal(one("EnvironmentFile"), `-/etc/default/${unit.file.replace(/\.service$/, "")}`);
      const expected: Record<string, string> = {
        ProtectSystem: "strict",
        ProtectHome: "yes",
        PrivateTmp: "yes",
        NoNewPrivileges: "yes",
        CapabilityBoundingSet: "",
        RestrictAddressFamilies: "AF_INET AF_INET6 AF_UNIX",
        Restart: "on-failure",
        KillSignal: "SIGTERM",
        UMask: "0007",
      };
      for (const [key, value] of Object.entries(expected)) assert.equal(one(key), value, key);
      assert.ok(service.get("SystemCallFilter")?.includes("@system-service"));
      assert.equal(one("SystemCallErrorNumber"), "EPERM", "a filtered call fails, it does not kill node");
      // V8's JIT needs writable+executable memory: Node aborts under MemoryDenyWriteExecute=yes.
      assert.equal(service.get("MemoryDenyWriteExecute"), undefined);
      assert.deepEqual(
        service.get("ReadWritePaths"),
        [`-${SOCKET_DIR}`],
        "optional: sendmail hosts have no Postfix spool",
      );
      if (unit.command === "all") assert.equal(one("StateDirectory"), "greyfleet");
    });

    it("starts a command whose settings greyfleet accepts, and outlasts its shutdown grace", () => {
      const env: Record<string, string> = {};
      for (const assignment of service.get("Environment") ?? []) {
        const eq = assignment.indexOf("=");
        env[assignment.slice(0, eq)] = assignment.slice(eq + 1);
      }
      const word = one("ExecStart").split(" ").at(-1) ?? "";
      const command = (word.startsWith("$") ? env[word.slice(1)] : word) as Command;
      assert.equal(command, unit.command);
      const config = loadConfig(command, { argv: [], env });
      assert.ok(!isConfigProblem(config), isConfigProblem(config) ? config.problems.join("; ") : "");
      const listen = command === "milter" ? config.milterListen : config.policyListen;
      assert.equal(listen, `unix:${SOCKET_DIR}/${unit.socket}`);
      const stopSeconds = Number(/^(\d+)s$/.exec(one("TimeoutStopSec"))?.[1]);
      assert.ok(stopSeconds * 1000 > config.shutdownGraceMs, "TimeoutStopSec > --shutdown-grace");
    });
  });
}

describe("deploy/systemd tmpfiles.d and sysusers.d", () => {
  const root = mkdtempSync(join(tmpdir(), "greyfleet-tmpfiles-"));
  after(() => rmSync(root, { recursive: true, force: true }));

  it("creates the greyfleet user and /var/spool/postfix/greyfleet as greyfleet:postfix 2750", () => {
    mkdirSync(join(root, "etc"));
    mkdirSync(join(root, "var/spool/postfix"), { recursive: true });
    writeFileSync(join(root, "etc/passwd"), "postfix:x:102:105::/var/spool/postfix:/usr/sbin/nologin\n");
    writeFileSync(join(root, "etc/group"), "postfix:x:105:\n");
    const sysusers = run("systemd-sysusers", [`--root=${root}`, projectFile("deploy/systemd/greyfleet-sysusers.conf")]);
    assert.equal(sysusers.status, 0, sysusers.output);
    const user = readFileSync(join(root, "etc/passwd"), "utf8")
      .split("\n")
      .find((l) => l.startsWith("greyfleet:"));
    assert.ok(user, sysusers.output);
    assert.match(user, /:\/usr\/sbin\/nologin$/);
    const tmpfiles = run("systemd-tmpfiles", [
      `--root=${root}`,
      "--create",
      projectFile("deploy/systemd/greyfleet.conf"),
    ]);
    assert.equal(tmpfiles.status, 0, tmpfiles.output);
    const dir = statSync(join(root, SOCKET_DIR));
    assert.equal(dir.mode & 0o7777, 0o2750);
    assert.equal(dir.uid, Number(user.split(":")[2]));
    assert.equal(dir.gid, gidOf("postfix", join(root, "etc/group")));
  });
});

describe("shim unix socket permissions (setgid directory + UMask=0007)", () => {
  const root = mkdtempSync(join(tmpdir(), "greyfleet-socket-"));
  const children: ChildProcess[] = [];
  before(() => {
    assert.equal(process.getuid?.(), 0, "needs root (setpriv)");
    chmodSync(root, 0o755);
  });
  after(() => {
    for (const child of children) child.kill("SIGKILL");
    rmSync(root, { recursive: true, force: true });
  });

  async function startPolicy(umask: string, dir: string): Promise<string> {
    const socket = join(dir, "policy.sock");
    const args = ["policy", "--listen", `unix:${socket}`, "--decision", `127.0.0.1:${await freePort()}`];
    // The shell sets the umask as systemd's UMask= would, then execs node.
    const child = spawn("sh", ["-c", 'umask "$0" && exec "$@"', umask, process.execPath, GREYFLEET_BIN, ...args], {
      env: { ...process.env, GREYFLEET_METRICS_LISTEN: "" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let output = "";
    child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
    await waitFor(`greyfleet policy on ${socket}`, () => output.includes("greyfleet started"), 15_000).catch(
      (error: unknown) => {
        throw new Error(`${String(error)}\n${output}`);
      },
    );
    return socket;
  }

  function socketDir(name: string): string {
    // As tmpfiles.d makes it: owner = the service user (here root), group postfix, setgid, 2750.
    const dir = join(root, name);
    mkdirSync(dir);
    chownSync(dir, 0, gidOf("postfix"));
    chmodSync(dir, 0o2750);
    return dir;
  }

  it("gives the socket group postfix and mode 0660: postfix connects, others do not", async () => {
    const socket = await startPolicy("0007", socketDir("with-umask"));
    const stat = statSync(socket);
    assert.ok(stat.isSocket());
    assert.equal(stat.mode & 0o777, 0o660);
    assert.equal(stat.gid, gidOf("postfix"), "inherited from the setgid directory");
    assert.equal(connectAs("postfix", "postfix", socket), "connected");
    assert.equal(connectAs(NOBODY, NOBODY, socket), "EACCES");
  });

  it("sets the socket's mode itself, so the default umask 022 does not keep postfix out", async () => {
    const socket = await startPolicy("0022", socketDir("default-umask"));
    assert.equal(statSync(socket).mode & 0o777, 0o660);
    assert.equal(connectAs("postfix", "postfix", socket), "connected");
    assert.equal(connectAs(NOBODY, NOBODY, socket), "EACCES");
  });
});
