/**
 * A real, private Postfix instance for end-to-end tests of the shims (reference part D): its own
 * `-c` config dir, queue, data dir, log file and free loopback port under one temp dir, so test
 * files can run several instances at once. Needs root and the Debian `postfix` package; without
 * them the test fails, it never skips.
 *
 * Observing headers: the discard transport stores nothing, so every header cleanup(8) sees is
 * logged instead, by `header_checks` (client headers and policy PREPENDs) and
 * `milter_header_checks` (headers a milter adds) with the rule `/^/ WARN`. Verified on 3.7.11:
 * `<qid>: warning: header X-Greylist: test from unknown[192.0.2.1]; from=<…> to=<…> proto=ESMTP
 * helo=<…>`, and `<qid>: milter-header-warning: header …` for milter-added ones. Postfix cuts the
 * logged header at 200 characters and writes control characters (a fold's LF and TAB) as `?`.
 *
 * SASL users without a SASL daemon: XCLIENT LOGIN=alice (swaks `xclientLogin`) works with
 * `smtpd_sasl_auth_enable = no`: the policy service gets `sasl_method=XCLIENT` and
 * `sasl_username=alice`, the milter gets `{auth_type}=XCLIENT` and `{auth_authen}=alice` at MAIL.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { freePort } from "./ports";
import { waitFor } from "./wait";

/** What the instance is wired to; everything else is fixed by the harness. */
export interface PostfixOptions {
  /** `check_policy_service` target after reject_unauth_destination, e.g. "inet:127.0.0.1:12345". */
  policyService?: string;
  /** Also check the policy service at DATA (smtpd_data_restrictions), where the null sender is greylisted. */
  policyAtData?: boolean;
  /** smtpd_policy_service_default_action; Postfix's default is "451 4.3.5 Server configuration problem". */
  policyDefaultAction?: string;
  /** smtpd_policy_service_timeout; default 10 (Postfix: 100), so a hung service fails a test quickly. */
  policyTimeoutSeconds?: number;
  /** smtpd_milters entry, e.g. "inet:127.0.0.1:12346". */
  milter?: string;
  /** milter_default_action on milter failure; default tempfail (Postfix 3.7's default). */
  milterDefaultAction?: "tempfail" | "accept" | "reject" | "quarantine";
  /** milter_command_timeout (OPTNEG and envelope replies); default 10 (Postfix: 30). */
  milterCommandTimeoutSeconds?: number;
  /** Also listen on [::1] (same port) with inet_protocols = all. */
  ipv6?: boolean;
  /** relay_domains: recipients there are accepted (and discarded), others get 554 5.7.1; default example.com. */
  relayDomains?: readonly string[];
  /** Extra main.cf parameters, written last so they override the harness's (e.g. smtpd_end_of_data_restrictions). */
  mainCf?: Readonly<Record<string, string>>;
}

// Stock Debian services, chroot off (the chroot has no copy of the temp dir), no external pipes.
// postlog is what writes maillog_file; without syslog in the container it is the only log.
const MASTER_SERVICES = `
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

// `<qid>: [milter-header-]warning: header <Name: value> from <client>; from=<…> to=<…> proto=… helo=<…>[: text]`
const HEADER_LINE =
  /postfix\/cleanup\[\d+\]: ([0-9A-Za-z]+): (?:milter-header-)?warning: header (.*) from [^\s;]*\[[^\]]*\];(?: from=<[^>]*>)?(?: to=<[^>]*>)?(?: proto=\S+)?(?: helo=<[^>]*>)?(?:: .*)?$/;
// A port free on 127.0.0.1 may be taken on ::1, or by a parallel test before master binds it.
const START_ATTEMPTS = 3;
const COMMAND_TIMEOUT_MS = 30_000;
const running = new Set<PostfixInstance>();

/** A running private Postfix; `stop()` it in an `after` hook or a `finally`. */
export class PostfixInstance {
  private constructor(
    /** Temp dir holding conf/, run/spool, run/data and maillog. */
    readonly dir: string,
    /** smtpd port on 127.0.0.1 (and on [::1] with `ipv6`). */
    readonly smtpPort: number,
    /** smtpd also listens on [::1]. */
    readonly ipv6: boolean,
    private readonly postfix: string,
  ) {}

  /** Writes the config, runs `postfix check` and `postfix start`, and waits for the SMTP listeners. */
  static async start(options: PostfixOptions = {}): Promise<PostfixInstance> {
    const postfix = findPostfix();
    for (let attempt = 1; ; attempt++) {
      const dir = fs.mkdtempSync(join(tmpdir(), "greyfleet-postfix-"));
      fs.chmodSync(dir, 0o755); // smtpd etc. run as user postfix and must reach the queue dir
      const instance = new PostfixInstance(dir, await freePort(), options.ipv6 === true, postfix);
      let output = "";
      try {
        instance.writeConfig(options);
        output = await instance.command("check");
        // `postfix start` would run the same checks again (~0.3 s); quick-start skips them once.
        fs.writeFileSync(join(instance.spool, "quick-start"), "");
        output += await instance.command("start"); // returns once master is up (`master -w`)
        await instance.waitForListeners();
        running.add(instance);
        return instance;
      } catch (error) {
        const log = instance.maillog();
        instance.kill();
        fs.rmSync(dir, { recursive: true, force: true });
        const detail = error instanceof Error ? error.message : String(error);
        if (attempt < START_ATTEMPTS && /Address already in use/.test(detail + log)) continue;
        throw new Error(
          `private Postfix did not start (try ${attempt}): ${detail}\n${output}\n--- maillog ---\n${log}`,
        );
      }
    }
  }

  /** The config dir, for `postfix -c` / `postconf -c`. */
  get configDir(): string {
    return join(this.dir, "conf");
  }

  private get spool(): string {
    return join(this.dir, "run", "spool");
  }

  /** Runs `postfix stop`, waits for the master process to exit, and removes the temp dir. */
  async stop(): Promise<void> {
    if (!running.delete(this)) return;
    const pid = this.masterPid();
    try {
      await this.command("stop");
      if (pid !== undefined) await waitFor(`Postfix master ${pid} to exit`, () => !isAlive(pid), 10_000);
    } catch (error) {
      this.kill();
      throw new Error(`postfix stop failed: ${String(error)}\n--- maillog ---\n${this.maillog()}`);
    } finally {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** The whole log file (postlogd writes it, a few ms after the SMTP reply). */
  maillog(): string {
    try {
      return fs.readFileSync(join(this.dir, "maillog"), "utf8");
    } catch {
      return "";
    }
  }

  /** Waits until `pattern` (made multiline: ^ and $ match at line ends) matches the log after offset `since`. */
  waitForLog(pattern: RegExp, timeoutMs = 10_000, since = 0): Promise<RegExpMatchArray> {
    const lines = new RegExp(pattern.source, `${pattern.flags.replace(/[gmy]/g, "")}m`);
    const found = () => this.maillog().slice(since).match(lines) ?? false;
    return waitFor(`${pattern} in the Postfix log`, found, timeoutMs).catch((error: unknown) => {
      throw new Error(`${error instanceof Error ? error.message : String(error)}\n--- maillog ---\n${this.maillog()}`);
    });
  }

  /** Recipients the discard transport "delivered" (status=sent), once the message has left the queue. */
  async deliveredRecipients(queueId: string, timeoutMs = 10_000): Promise<string[]> {
    await this.waitForLog(new RegExp(`: ${queueId}: removed$`), timeoutMs);
    const sent = new RegExp(`: ${queueId}: to=<([^>]*)>, .*status=sent`, "gm");
    return [...this.maillog().matchAll(sent)].map((match) => match[1] ?? "");
  }

  /**
   * "Name: value" of every header the delivered message had (client headers and PREPENDs in
   * order, milter-added ones last), from the WARN log lines, once the message has left the queue.
   */
  async deliveredHeaders(queueId: string, timeoutMs = 10_000): Promise<string[]> {
    await this.waitForLog(new RegExp(`: ${queueId}: removed$`), timeoutMs);
    const headers: string[] = [];
    for (const line of this.maillog().split("\n")) {
      const match = HEADER_LINE.exec(line);
      // Postfix logs control characters as "?": a fold (LF TAB, as Postfix and most milters write
      // it) reads "??" and becomes one space here; "? " (LF SPACE) is left alone, "?" being legal text.
      if (match?.[1] === queueId) headers.push((match[2] ?? "").replaceAll("??", " "));
    }
    return headers;
  }

  private writeConfig(options: PostfixOptions): void {
    const conf = this.configDir;
    fs.mkdirSync(conf);
    fs.mkdirSync(this.spool, { recursive: true }); // postfix check adds its subdirs and run/data (owner postfix)
    fs.writeFileSync(join(conf, "header_checks"), "/^/ WARN\n");
    fs.writeFileSync(join(conf, "main.cf"), `${mainCf(this.dir, options).join("\n")}\n`);
    const listeners = [`127.0.0.1:${this.smtpPort} inet n - n - - smtpd`];
    if (this.ipv6) listeners.push(`[::1]:${this.smtpPort} inet n - n - - smtpd`);
    fs.writeFileSync(join(conf, "master.cf"), `${listeners.join("\n")}\n${MASTER_SERVICES}`);
    // Postfix re-reads a main.cf younger than ~2 s every 300 ms until it is older (a guard against
    // half-written files), about 2 s per postfix command. Backdated files skip that wait.
    const past = new Date(Date.now() - 60_000);
    for (const file of ["header_checks", "main.cf", "master.cf"]) fs.utimesSync(join(conf, file), past, past);
  }

  /** `postfix -c <conf> <verb>` under script(1): postfix writes errors to stderr only on a tty (D.4 #1). */
  private command(verb: "check" | "start" | "stop"): Promise<string> {
    const argv = [this.postfix, "-c", this.configDir, verb].map((word) => `'${word.replaceAll("'", `'\\''`)}'`);
    // script(1) is util-linux (Debian: bsdutils, Essential), so it is always there.
    const child = spawn("script", ["-qec", argv.join(" "), "/dev/null"], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_TIMEOUT_MS);
      child.once("error", (error) => reject(new Error(`postfix ${verb}: ${error.message}`)));
      child.once("close", (code) => {
        clearTimeout(timer);
        const text = output.replace(/\r/g, "");
        if (code === 0) resolve(text);
        else reject(new Error(`postfix -c ${this.configDir} ${verb} exited with ${code}: ${text.trim()}`));
      });
    });
  }

  /**
   * Waits for the listening sockets in /proc/net rather than connecting: every TCP connection to
   * smtpd opens a milter session (OPTNEG, CONNECT, QUIT at the milter, D.4 #2), and a policy or
   * milter test would then see a session it did not make.
   */
  private async waitForListeners(): Promise<void> {
    const listening = (file: string): boolean => {
      const port = `:${this.smtpPort.toString(16).toUpperCase().padStart(4, "0")} `;
      // Columns: sl local_address rem_address st …; state 0A is LISTEN.
      const lines = fs.readFileSync(file, "utf8").split("\n");
      return lines.some((line) => line.includes(port) && line.trim().split(/\s+/)[3] === "0A");
    };
    await waitFor(`smtpd on 127.0.0.1:${this.smtpPort}`, () => listening("/proc/net/tcp"));
    if (this.ipv6) await waitFor(`smtpd on [::1]:${this.smtpPort}`, () => listening("/proc/net/tcp6"));
  }

  private masterPid(): number | undefined {
    try {
      const pid = Number.parseInt(fs.readFileSync(join(this.spool, "pid", "master.pid"), "utf8"), 10);
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** SIGKILL for this instance's master only; its children exit when their master is gone. */
  private kill(): void {
    const pid = this.masterPid();
    if (pid !== undefined && isAlive(pid)) process.kill(pid, "SIGKILL");
  }

  /** Synchronous stop for the exit hook, where nothing can be awaited. */
  stopSync(): void {
    if (!running.delete(this)) return;
    spawnSync(this.postfix, ["-c", this.configDir, "stop"], { stdio: "ignore", timeout: COMMAND_TIMEOUT_MS });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// A test file that forgets stop(), or fails in a `before` hook, must not leave masters behind.
process.once("exit", () => {
  for (const instance of [...running]) instance.stopSync();
});

function mainCf(dir: string, options: PostfixOptions): string[] {
  const checks = `regexp:${join(dir, "conf", "header_checks")}`;
  const policy = options.policyService ? [`check_policy_service ${options.policyService}`] : [];
  const lines: Record<string, string> = {
    compatibility_level: "3.6",
    queue_directory: join(dir, "run", "spool"),
    data_directory: join(dir, "run", "data"),
    // No syslog in CI containers: postlogd writes here; the prefix list must allow the path.
    maillog_file: join(dir, "maillog"),
    maillog_file_prefixes: dir,
    myhostname: "mx.test",
    mydestination: "",
    mynetworks: options.ipv6 ? "127.0.0.0/8, [::1]/128" : "127.0.0.0/8",
    relay_domains: (options.relayDomains ?? ["example.com"]).join(", "),
    inet_interfaces: options.ipv6 ? "127.0.0.1, [::1]" : "127.0.0.1",
    inet_protocols: options.ipv6 ? "all" : "ipv4",
    smtpd_peername_lookup: "no", // no DNS in CI; clients show as unknown[addr]
    smtputf8_enable: "no",
    alias_maps: "", // Debian's default includes nis:, which logs a warning per smtpd
    alias_database: "",
    biff: "no",
    // Nothing is stored or relayed: "delivered" means a discard line with status=sent.
    default_transport: "discard:greyfleet-harness",
    relay_transport: "discard:greyfleet-harness",
    local_transport: "discard:greyfleet-harness",
    smtpd_relay_restrictions: "reject_unauth_destination",
    // After reject_unauth_destination, so a policy OK can never make an open relay.
    smtpd_recipient_restrictions: ["reject_unauth_destination", ...policy].join(", "),
    smtpd_policy_service_timeout: `${options.policyTimeoutSeconds ?? 10}s`,
    smtpd_authorized_xclient_hosts: "127.0.0.0/8, [::1]/128",
    header_checks: checks,
    milter_header_checks: checks,
  };
  if (options.policyAtData) lines.smtpd_data_restrictions = policy.join(", ");
  if (options.policyDefaultAction !== undefined) {
    lines.smtpd_policy_service_default_action = options.policyDefaultAction;
  }
  if (options.milter) {
    Object.assign(lines, {
      smtpd_milters: options.milter,
      milter_protocol: "6",
      milter_default_action: options.milterDefaultAction ?? "tempfail",
      milter_connect_timeout: "10s",
      milter_command_timeout: `${options.milterCommandTimeoutSeconds ?? 10}s`,
      milter_content_timeout: "30s",
    });
  }
  Object.assign(lines, options.mainCf);
  return Object.entries(lines).map(([name, value]) => `${name} = ${value}`);
}

/** Absolute path of postfix(1), or a clear failure. */
function findPostfix(): string {
  if (process.getuid?.() !== 0) throw new Error("the Postfix harness must run as root (postfix start needs it)");
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin"].filter(Boolean);
  const postfix = dirs.map((dir) => join(dir, "postfix")).find((path) => fs.existsSync(path));
  if (!postfix) throw new Error("postfix is not installed: apt-get install postfix swaks");
  return postfix;
}

/** Running and not a zombie: an exited master can stay unreaped for a while under a container's PID 1. */
function isAlive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) [ZX] /s.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
