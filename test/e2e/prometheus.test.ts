/**
 * The Grafana dashboard and the alert rules in deploy/ against a real Prometheus (Debian package
 * `prometheus`, which also holds promtool; missing, the suite fails, it never skips).
 *
 * promtool checks the rules, runs their unit tests and checks the example configuration. Then the
 * test starts a Prometheus of its own (scrape and evaluation interval 1 s, the alert rules loaded)
 * that scrapes: `greyfleet serve` on a real redis-server with a policy and a milter shim in front
 * of it; a second `serve` whose Redis is stopped (the store failure mode); a policy shim whose
 * decision service resets every connection (the shim failure mode); and a "black hole" that resets
 * every scrape, listed as a decision service and as a milter shim (up == 0). Traffic goes through
 * the shims before the first scrape (so every series exists) and again after it (so rates move).
 *
 * Then, with Grafana's variables substituted as Grafana would ($job and $instance: every value of
 * their queries; $__rate_interval: 30s), every dashboard expression must return at least one
 * finite sample. Every series selector of the dashboard and of the alert rules must select series,
 * and every metric they name must be a constant of services/shared/metric-names.ts (or up,
 * process_*, nodejs_*). Alert expressions themselves need not return data: most compare with a
 * threshold or with a day ago, which a test of seconds cannot reach. Instead Prometheus must report
 * every rule healthy, and the alerts the traffic provokes must become pending or firing.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse, stringify } from "yaml";
import { Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import * as metricNames from "../../services/shared/metric-names";
import { projectFile } from "../../services/shared/paths";
import { rcpt } from "../support/engine";
import { GreyfleetProcess, runGreyfleet } from "../support/greyfleet-process";
import { TestClient } from "../support/grpc-clients";
import { MilterClient } from "../support/milter-client";
import { PolicyClient } from "../support/policy-client";
import { Prometheus, promtool, requirePrometheus } from "../support/prometheus";
import { RedisServer, uniquePrefix } from "../support/redis-server";
import { startAll } from "../support/start-all";
import { waitFor } from "../support/wait";

const ALERT_RULES = "deploy/prometheus/greyfleet-alerts.yml";
const ALERT_TESTS = "deploy/prometheus/greyfleet-alerts.test.yml";
const EXAMPLE_CONFIG = "deploy/prometheus/prometheus.example.yml";
const DASHBOARD = "deploy/grafana/greyfleet.json";
/** What $__rate_interval becomes: several 1 s scrapes, and well inside the test's lifetime. */
const RATE_INTERVAL = "30s";
/** Grafana's reference to the dashboard's data source variable, in every panel and target. */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JavaScript template
const DATASOURCE_UID = "${datasource}";
const LOCAL: readonly string[] = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
/** The client network the test auto-whitelists (a /24). */
const AWL_NETWORK = "203.0.113.0";
const GREYTRAP = "trap@example.com";
/** Clients that write to the greytrap, one per traffic phase (other /24s than every other client). */
const TRAPPED = { before: "198.18.0.1", after: "198.18.1.1" } as const;

/** Alerts the test's processes and traffic provoke; each must become pending or firing. */
const PROVOKED = [
  "GreyfleetStoreDown", // the second serve's Redis is stopped
  "GreyfleetFailureModeActive", // ... so it answers by its failure mode
  "GreyfleetShimFailureModeActive", // a policy shim whose decision service resets connections
  "GreyfleetDecisionServiceDown", // the black hole in job greyfleet-decision
  "GreyfleetShimDown", // the black hole in job greyfleet-milter
  "GreyfleetMtaProtocolErrors", // garbage sent to both shims
];
/** Alerts that must stay quiet: every shim reports; no day-ago data; a single greytrap hit. */
const QUIET = ["GreyfleetShimMissing", "GreyfleetDeferRatioUnusual", "GreyfleetGreytrapHitsSpike"];

interface Target {
  readonly expr?: string;
  readonly refId?: string;
  readonly datasource?: { readonly type?: string; readonly uid?: string };
}
interface Panel {
  readonly title: string;
  readonly type: string;
  readonly datasource?: { readonly type?: string; readonly uid?: string };
  readonly targets?: readonly Target[];
  readonly panels?: readonly Panel[];
}
interface Variable {
  readonly name: string;
  readonly type: string;
  readonly query: string | { readonly query: string };
}
interface Dashboard {
  readonly uid: string;
  readonly panels: readonly Panel[];
  readonly templating: { readonly list: readonly Variable[] };
}
interface RuleFile {
  readonly groups: readonly { readonly rules: readonly { readonly alert?: string; readonly expr: string }[] }[];
}
const dashboard = (): Dashboard => JSON.parse(readFileSync(projectFile(DASHBOARD), "utf8")) as Dashboard;
const alertRules = (): { alert: string; expr: string }[] =>
  (parse(readFileSync(projectFile(ALERT_RULES), "utf8")) as RuleFile).groups.flatMap((group) =>
    group.rules.flatMap((rule) => (rule.alert ? [{ alert: rule.alert, expr: rule.expr }] : [])),
  );

/** Every panel, rows' collapsed panels included. */
function allPanels(panels: readonly Panel[]): Panel[] {
  return panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);
}

/** Series selectors of an expression: a metric name and its matchers, if any. */
function selectors(expr: string): string[] {
  return [...expr.matchAll(/\b(up|(?:greyfleet|process|nodejs)_[a-z0-9_]+)\b(\{[^}]*\})?/g)].map((m) => m[0]);
}

/** The metric names greyfleet defines, and the histogram series derived from them. */
function definedNames(): Set<string> {
  const names = (Object.values(metricNames) as unknown[]).filter((value): value is string => typeof value === "string");
  return new Set(names.flatMap((name) => [name, `${name}_bucket`, `${name}_sum`, `${name}_count`]));
}

/** A regular expression matching exactly `values`, as Grafana writes a multi-value "All" into PromQL. */
function alternation(values: readonly string[]): string {
  return `(${values.map((value) => value.replace(/[.*+?^${}()|[\]\\]/g, "\\\\$&")).join("|")})`;
}

describe("alert rules under promtool", () => {
  before(requirePrometheus);

  it("checks the rules, passes their unit tests, and checks the example configuration", () => {
    assert.match(promtool("check", "rules", ALERT_RULES), /SUCCESS: \d+ rules found/);
    assert.match(promtool("test", "rules", ALERT_TESTS), /SUCCESS/);
    assert.match(promtool("check", "config", EXAMPLE_CONFIG), /is valid prometheus config file syntax/);
  });

  it("has unit tests that fire and that do not fire every alert", () => {
    const tests = parse(readFileSync(projectFile(ALERT_TESTS), "utf8")) as {
      tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const cases = tests.tests.flatMap((test) => test.alert_rule_test ?? []);
    for (const { alert } of alertRules()) {
      const mine = cases.filter((c) => c.alertname === alert);
      assert.ok(
        mine.some((c) => c.exp_alerts.length > 0),
        `${alert}: no unit test where it fires`,
      );
      assert.ok(
        mine.some((c) => c.exp_alerts.length === 0),
        `${alert}: no unit test where it does not fire`,
      );
    }
  });
});

describe("dashboard and alert rules against a real Prometheus", () => {
  let dir: string;
  let redis: RedisServer;
  let brokenRedis: RedisServer;
  let blackHole: Server;
  let blackHoleAddress: string;
  const processes: GreyfleetProcess[] = [];
  let serve: GreyfleetProcess;
  let broken: GreyfleetProcess;
  let policy: string;
  let milter: string;
  let orphanPolicy: string;
  let prometheus: Prometheus;
  /** $job and $instance as Grafana would fill them in with "All" selected. */
  const variables = new Map<string, string>();

  const start = async (args: string[]): Promise<GreyfleetProcess> => {
    const proc = await GreyfleetProcess.start(args);
    processes.push(proc);
    return proc;
  };

  /** Sum of the samples of `name` on a process's /metrics whose labels include `labels`. */
  const scraped = async (proc: GreyfleetProcess, name: string, labels = ""): Promise<number> => {
    const text = await (await fetch(`http://${proc.metricsAddress}/metrics`)).text();
    const lines = text.split("\n").filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
    return lines.filter((line) => line.includes(labels)).reduce((sum, line) => sum + Number(line.split(" ").pop()), 0);
  };

  /** Policy requests, milter sessions, protocol errors and failure-mode traffic; `phase` keeps triplets new. */
  async function traffic(phase: "before" | "after"): Promise<void> {
    const client = await PolicyClient.open(policy);
    for (let i = 0; i < 4; i++) {
      const reply = await client.ask({ sender: `s${i}-${phase}@example.org`, recipient: `r${i}@example.com` });
      assert.match(reply, /^action=DEFER_IF_PERMIT /);
    }
    assert.equal(await client.ask({ client_address: "40.92.0.1" }), "action=DUNNO", "default whitelist");
    const awl = { client_address: AWL_NETWORK.replace(/0$/, "6"), sender: `awl-${phase}@example.net` };
    assert.equal(await client.ask(awl), "action=DUNNO", "auto-whitelisted network");
    const trap = { client_address: TRAPPED[phase], sender: `spam-${phase}@example.net`, recipient: GREYTRAP };
    assert.match(await client.ask(trap), /^action=DEFER_IF_PERMIT /, "greytrap");
    // Refused by the service as INVALID_ARGUMENT: the shim's failure mode (open) answers.
    assert.equal(await client.ask({ client_address: "not-an-address" }), "action=DUNNO");
    client.close();

    const garbage = await PolicyClient.open(policy);
    garbage.write("no equals sign on this line\n\n");
    await garbage.closed;

    const session = await MilterClient.negotiated(milter);
    await session.connectEvent({ hostname: "[198.51.100.7]", family: "4", port: 54321, address: "198.51.100.7" });
    await session.helo("client.example.net");
    await session.mail(`milter-${phase}@example.org`);
    assert.equal((await session.rcpt("someone@example.com"))?.command, "y".charCodeAt(0), "REPLYCODE: deferred");
    await session.quit();
    const badFrame = await MilterClient.open(milter);
    badFrame.sendRaw(Buffer.alloc(4)); // a zero-length frame
    await badFrame.closed;

    const orphan = await PolicyClient.open(orphanPolicy);
    assert.equal(await orphan.ask({ sender: `orphan-${phase}@example.org` }), "action=DUNNO", "failure mode open");
    orphan.close();

    // The service whose Redis is stopped answers by its failure mode (open).
    const direct = new TestClient(broken.grpcAddress);
    try {
      for (let i = 0; i < 3; i++) {
        const response = await direct.check(rcpt({ recipient: `outage${i}-${phase}@example.com` }));
        assert.equal(response.reason, Reason.REASON_STORE_UNAVAILABLE);
      }
    } finally {
      direct.close();
    }
  }

  before(async () => {
    requirePrometheus();
    dir = mkdtempSync(join(tmpdir(), "greyfleet-prometheus-"));
    [redis, brokenRedis] = await startAll([RedisServer.start(), RedisServer.start()]);
    blackHole = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => blackHole.listen(0, "127.0.0.1", resolve));
    const hole = blackHole.address();
    blackHoleAddress = `127.0.0.1:${typeof hole === "object" && hole ? hole.port : 0}`;

    [serve, broken] = await startAll([
      start([
        "serve",
        "--store",
        redis.url,
        "--redis-key-prefix",
        uniquePrefix(),
        ...LOCAL,
        "--delay",
        "1s",
        "--awl-passes",
        "1",
        "--awl-count-interval",
        "0",
        "--state-sample-interval",
        "1s",
      ]),
      start(["serve", "--store", brokenRedis.url, ...LOCAL, "--health-interval", "100ms", "--store-timeout", "100ms"]),
    ]);
    const shim = (kind: string, decision: string, ...extra: string[]) =>
      start([kind, "--decision", decision, ...LOCAL, ...extra]);
    const [policyProc, milterProc, orphanProc] = await startAll([
      shim("policy", serve.grpcAddress, "--mta-id", "mx1"),
      shim("milter", serve.grpcAddress, "--mta-id", "mx1"),
      shim("policy", blackHoleAddress, "--mta-id", "mx2", "--decision-timeout", "200ms"),
    ]);
    policy = policyProc.logged(/policy server listening/, "policy");
    milter = milterProc.logged(/milter server listening/, "milter");
    orphanPolicy = orphanProc.logged(/policy server listening/, "policy");

    // With --awl-passes 1, one retry that passes after the 1 s delay auto-whitelists its network.
    const awl = await PolicyClient.open(policy);
    const retried = { client_address: AWL_NETWORK.replace(/0$/, "5"), sender: "awl@example.org" };
    assert.match(await awl.ask(retried), /^action=DEFER_IF_PERMIT /);

    await brokenRedis.stop();
    await waitFor("the stopped Redis to be noticed", async () => (await scraped(broken, metricNames.STORE_UP)) === 0);
    const trap = await runGreyfleet(["admin", "--server", serve.grpcAddress, "add", "greytrap", GREYTRAP]);
    assert.equal(trap.code, 0, trap.stderr);
    await waitFor("the greytrap in force", async () => {
      return (await scraped(serve, metricNames.LIST_ENTRIES, 'kind="greytrap"')) === 1;
    });

    await waitFor("the retry to pass", async () => (await awl.ask(retried)).startsWith("action=PREPEND"), 5_000, 200);
    awl.close();
    // Before the first scrape: every series exists from then on.
    await traffic("before");

    const config = {
      global: { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" },
      rule_files: [projectFile(ALERT_RULES)],
      scrape_configs: [
        {
          job_name: "greyfleet-decision",
          static_configs: [{ targets: [serve.metricsAddress, broken.metricsAddress, blackHoleAddress] }],
        },
        {
          job_name: "greyfleet-policy",
          static_configs: [{ targets: [policyProc.metricsAddress, orphanProc.metricsAddress] }],
        },
        { job_name: "greyfleet-milter", static_configs: [{ targets: [milterProc.metricsAddress, blackHoleAddress] }] },
      ],
    };
    prometheus = await Prometheus.start(dir, stringify(config));
    const targets = config.scrape_configs.flatMap((job) => job.static_configs.flatMap((c) => c.targets)).length;
    await waitFor(
      "every target scraped",
      async () =>
        (await prometheus.query("up")).length === targets &&
        (await prometheus.query("greyfleet_build_info")).length === processes.length,
      15_000,
      200,
    );

    // After it, the same again: rates move.
    await traffic("after");

    // Two scrapes of every target after the traffic: every rate window holds samples from before and after it.
    const trafficEnd = Date.now() / 1000;
    await waitFor(
      "two scrapes after the traffic",
      async () => {
        const [oldest] = await prometheus.query("min(timestamp(up))");
        return oldest !== undefined && Number(oldest.value[1]) > trafficEnd + 1;
      },
      15_000,
      200,
    );

    const jobs = await prometheus.api<string[]>("label/job/values", { "match[]": "greyfleet_build_info" });
    variables.set("job", alternation(jobs));
    const instances = await prometheus.api<string[]>("label/instance/values", {
      "match[]": `up{job=~"${variables.get("job")}"}`,
    });
    variables.set("instance", alternation(instances));
  });

  after(async () => {
    await prometheus?.stop();
    for (const proc of processes.reverse()) await proc.stop();
    blackHole?.close();
    await redis?.stop();
    await brokenRedis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** `expr` with Grafana's variables filled in. */
  const substitute = (expr: string): string => {
    const done = expr
      .replaceAll("$__rate_interval", RATE_INTERVAL)
      .replaceAll("$__interval", "15s")
      .replace(/\$(\w+)/g, (whole, name: string) => variables.get(name) ?? whole);
    assert.doesNotMatch(done, /\$/, `a variable left in ${done}`);
    return done;
  };

  it("loads every alert rule and evaluates each without error", async () => {
    const names = alertRules().map((rule) => rule.alert);
    type Rules = { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
    const loaded = await waitFor(
      "every rule evaluated",
      async () => {
        const rules = (await prometheus.api<Rules>("rules", { type: "alert" })).groups.flatMap((g) => g.rules);
        return rules.length > 0 && rules.every((rule) => rule.health !== "unknown") && rules;
      },
      10_000,
      200,
    );
    assert.deepEqual(loaded.map((rule) => rule.name).sort(), [...names].sort());
    for (const rule of loaded) assert.equal(rule.health, "ok", `${rule.name}: ${rule.lastError}`);
    for (const { alert, expr } of alertRules()) {
      await prometheus.query(expr).catch((error: unknown) => assert.fail(`${alert}: ${String(error)}`));
    }
  });

  it("names only greyfleet's metric constants (or up, process_*, nodejs_*), each selector with series", async () => {
    const defined = definedNames();
    const expressions = [
      ...allPanels(dashboard().panels).flatMap((panel) => (panel.targets ?? []).map((t) => substitute(t.expr ?? ""))),
      ...alertRules().map((rule) => rule.expr),
    ];
    const missing: string[] = [];
    for (const selector of new Set(expressions.flatMap(selectors))) {
      const name = selector.replace(/\{.*$/, "");
      const standard = name === "up" || name.startsWith("process_") || name.startsWith("nodejs_");
      assert.ok(standard || defined.has(name), `${name} is not in services/shared/metric-names.ts`);
      if ((await prometheus.query(`count(${selector})`)).length === 0) missing.push(selector);
    }
    assert.deepEqual(missing, [], "selectors without series");
  });

  it("has every panel on the $datasource variable, and every variable offers values", async () => {
    const { uid, panels, templating } = dashboard();
    assert.equal(uid, "greyfleet");
    const datasource = templating.list.find((v) => v.name === "datasource");
    assert.deepEqual([datasource?.type, datasource?.query], ["datasource", "prometheus"]);
    for (const panel of allPanels(panels).filter((p) => p.type !== "row")) {
      assert.equal(panel.datasource?.uid, DATASOURCE_UID, `panel "${panel.title}"`);
      for (const target of panel.targets ?? []) assert.equal(target.datasource?.uid, DATASOURCE_UID, panel.title);
    }
    for (const variable of templating.list.filter((v) => v.type === "query")) {
      const query = typeof variable.query === "string" ? variable.query : variable.query.query;
      const match = /^label_values\((.+),\s*(\w+)\)$/.exec(query);
      assert.ok(match?.[1] && match[2], `${variable.name}: ${query}`);
      const values = await prometheus.api<string[]>(`label/${match[2]}/values`, { "match[]": substitute(match[1]) });
      assert.ok(values.length > 0, `variable ${variable.name} (${query}) offers no values`);
    }
  });

  it("returns data for every dashboard expression", async () => {
    const empty: string[] = [];
    let count = 0;
    for (const panel of allPanels(dashboard().panels)) {
      for (const target of panel.targets ?? []) {
        const expr = substitute(target.expr ?? "");
        const samples = await prometheus.query(expr);
        count++;
        if (!samples.some((sample) => Number.isFinite(Number(sample.value[1])))) {
          empty.push(`"${panel.title}" ${target.refId}: ${expr} => ${JSON.stringify(samples)}`);
        }
      }
    }
    assert.ok(count >= 20, `${count} expressions`);
    assert.deepEqual(empty, [], "dashboard expressions without a finite sample");
  });

  it("makes the alerts the test provokes pending or firing, and keeps the others quiet", async () => {
    type Alerts = { alerts: { labels: Record<string, string>; state: string }[] };
    const active = async () =>
      new Set((await prometheus.api<Alerts>("alerts")).alerts.map((a) => a.labels.alertname ?? ""));
    await waitFor(
      `${PROVOKED.join(", ")} active`,
      async () => {
        const now = await active();
        return PROVOKED.every((name) => now.has(name));
      },
      10_000,
      200,
    ).catch(async (error: unknown) => assert.fail(`${String(error)}; active: ${[...(await active())].join(", ")}`));
    const now = await active();
    assert.deepEqual(
      QUIET.filter((name) => now.has(name)),
      [],
    );
  });
});
