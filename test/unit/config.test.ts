import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { envName, isConfigProblem, loadConfig } from "../../services/shared/config";
import { formatSeconds, parseDurationMs } from "../../services/shared/durations";
import type { Config } from "../../services/shared/settings";

function ok(result: ReturnType<typeof loadConfig>): Config {
  if (isConfigProblem(result)) assert.fail(`unexpected problems: ${result.problems.join("; ")}`);
  return result;
}

function problems(result: ReturnType<typeof loadConfig>): string {
  assert.ok(isConfigProblem(result), "expected a configuration problem");
  return result.problems.join("\n");
}

describe("durations", () => {
  const cases: [string, "s" | "ms", number][] = [
    ["300", "s", 300_000],
    ["300s", "s", 300_000],
    ["5m", "s", 300_000],
    ["48h", "s", 172_800_000],
    ["35d", "s", 3_024_000_000],
    ["250", "ms", 250],
    ["250ms", "s", 250],
    ["2w", "s", 1_209_600_000],
  ];
  for (const [text, bare, ms] of cases)
    it(`${text} (${bare}) = ${ms} ms`, () => assert.equal(parseDurationMs(text, bare), ms));
  for (const text of ["", "5 m", "-5s", "1.5h", "5y", "s", "9999999999999d"]) {
    it(`refuses ${JSON.stringify(text)}`, () => assert.equal(typeof parseDurationMs(text, "s"), "object"));
  }
  it("formats seconds compactly", () => {
    assert.equal(formatSeconds(300), "5m");
    assert.equal(formatSeconds(172_800), "2d");
    assert.equal(formatSeconds(301), "301s");
  });
});

describe("loadConfig", () => {
  it("has the documented defaults", () => {
    const config = ok(loadConfig("serve", { argv: [], env: {} }));
    assert.equal(config.grpcListen, "127.0.0.1:50051");
    assert.equal(config.store, "sqlite:");
    assert.equal(config.greylistDelaySeconds, 300);
    assert.equal(config.retryWindowSeconds, 48 * 3600);
    assert.equal(config.maxAgeSeconds, 35 * 86_400);
    assert.equal(config.autoWhitelistPasses, 5);
    assert.equal(config.failureMode, "open");
    assert.equal(config.deferSmtpCode, 451);
    assert.equal(config.deferEnhancedStatusCode, "4.7.1");
    assert.equal(config.metricsListen, "127.0.0.1:9750");
    assert.ok(Object.isFrozen(config));
  });

  it("takes flags over environment over YAML", () => {
    const yaml = "delay: 10m\nretry-window: 24h\nmax-age: 40d\nfailure-mode: tempfail\n";
    const config = ok(
      loadConfig("serve", {
        argv: ["--config", "/etc/greyfleet.yaml", "--delay", "2s"],
        env: { GREYFLEET_DELAY: "1m", GREYFLEET_RETRY_WINDOW: "36h" },
        readFile: (path) => {
          assert.equal(path, "/etc/greyfleet.yaml");
          return yaml;
        },
      }),
    );
    assert.equal(config.greylistDelaySeconds, 2);
    assert.equal(config.retryWindowSeconds, 36 * 3600);
    assert.equal(config.maxAgeSeconds, 40 * 86_400);
    assert.equal(config.failureMode, "tempfail");
  });

  it("accepts --name=value and GREYFLEET_CONFIG", () => {
    const config = ok(
      loadConfig("serve", {
        argv: ["--store=memory:"],
        env: { GREYFLEET_CONFIG: "c.yaml" },
        readFile: () => "awl-passes: 0\n",
      }),
    );
    assert.equal(config.store, "memory:");
    assert.equal(config.autoWhitelistPasses, 0);
  });

  it("takes every YAML scalar as written: a secret that looks like a number is not converted", () => {
    const config = ok(
      loadConfig("serve", {
        argv: ["--config", "c.yaml"],
        env: {},
        readFile: () => "store-password: 0123\nadmin-token: 1e3\nawl-passes: 7\n",
      }),
    );
    assert.equal(config.storePassword, "0123");
    assert.equal(config.adminToken, "1e3");
    assert.equal(config.autoWhitelistPasses, 7);
  });

  it("refuses a store URL with a stray space (it would name another sqlite file)", () => {
    assert.match(
      problems(loadConfig("serve", { argv: [], env: { GREYFLEET_STORE: "sqlite:/var/lib/greyfleet/g.sqlite " } })),
      /GREYFLEET_STORE: .*has leading or trailing whitespace/,
    );
  });

  it("refuses a shutdown grace too short for anything to finish", () => {
    assert.match(
      problems(loadConfig("serve", { argv: ["--shutdown-grace", "0"], env: {} })),
      /--shutdown-grace: .*100/,
    );
  });

  it("never quotes a secret in a start-up error: not a password, a token, nor a store URL's credentials", () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ GREYFLEET_STORE_PASSWORD: "hunter2\nsecond-line" }, /GREYFLEET_STORE_PASSWORD: .*at most 512 characters/],
      [{ GREYFLEET_ADMIN_TOKEN: "hunter2 with-space" }, /GREYFLEET_ADMIN_TOKEN: .*printable characters/],
      [{ GREYFLEET_STORE: "redis://greyfleet:hunter2@redis:6379 " }, /GREYFLEET_STORE: .*trailing whitespace/],
    ];
    for (const [env, reason] of cases) {
      const text = problems(loadConfig("serve", { argv: [], env }));
      assert.match(text, reason);
      assert.ok(!text.includes("hunter2"), text);
    }
  });

  it("names the setting and the source of an invalid value", () => {
    assert.match(problems(loadConfig("serve", { argv: ["--delay", "soon"], env: {} })), /--delay: "soon"/);
    assert.match(
      problems(loadConfig("serve", { argv: [], env: { GREYFLEET_FAILURE_MODE: "closed" } })),
      /GREYFLEET_FAILURE_MODE: "closed" is not one of open, tempfail/,
    );
    assert.match(
      problems(loadConfig("serve", { argv: ["--config", "c.yaml"], env: {}, readFile: () => "ipv4-prefix: 40" })),
      /ipv4-prefix in c.yaml: 40 is outside 8\.\.32/,
    );
    assert.match(
      problems(loadConfig("policy", { argv: ["--decision", "10.0.0.1:50051,10.0.0.2"], env: {} })),
      /--decision: "10\.0\.0\.2" is not HOST:PORT \(or use dns:NAME:PORT\)/,
    );
    // A port over 65535 is an invalid setting (exit 2), not a failure to bind at start-up.
    assert.match(
      problems(loadConfig("serve", { argv: ["--listen", "127.0.0.1:70000"], env: {} })),
      /--listen: "127\.0\.0\.1:70000" is not HOST:PORT/,
    );
    assert.match(
      problems(loadConfig("serve", { argv: ["--metrics-listen", "[::1]:65536"], env: {} })),
      /--metrics-listen: "\[::1\]:65536"/,
    );
    assert.match(
      problems(loadConfig("policy", { argv: ["--policy-listen", "127.0.0.1:99999"], env: {} })),
      /--policy-listen: "127\.0\.0\.1:99999"/,
    );
    assert.match(
      problems(loadConfig("milter", { argv: ["--decision", "dns:greyfleet.example:70000"], env: {} })),
      /--decision/,
    );
    assert.equal(
      ok(loadConfig("serve", { argv: ["--listen", "127.0.0.1:65535"], env: {} })).grpcListen,
      "127.0.0.1:65535",
    );
    const fleet = "10.0.0.1:50051,[fd00::2]:50051";
    assert.equal(ok(loadConfig("milter", { argv: ["--decision", fleet], env: {} })).decisionAddress, fleet);
  });

  it("reports every problem at once", () => {
    const text = problems(
      loadConfig("serve", { argv: ["--delay", "x", "--defer-code", "550", "--nope", "1"], env: {} }),
    );
    assert.match(text, /--delay/);
    assert.match(text, /--defer-code: "550" is not a 4xx code/);
    assert.match(text, /--nope is not a setting of "greyfleet serve"/);
  });

  it("refuses unknown YAML keys, non-mappings and unreadable files", () => {
    assert.match(
      problems(loadConfig("serve", { argv: ["--config", "c.yaml"], env: {}, readFile: () => "dely: 5m" })),
      /unknown setting "dely"/,
    );
    assert.match(
      problems(loadConfig("serve", { argv: ["--config", "c.yaml"], env: {}, readFile: () => "- a\n- b" })),
      /expected a mapping/,
    );
    assert.match(
      problems(
        loadConfig("serve", {
          argv: ["--config", "missing.yaml"],
          env: {},
          readFile: () => {
            throw new Error("ENOENT: no such file");
          },
        }),
      ),
      /config file missing.yaml: ENOENT/,
    );
  });

  it("checks settings against each other", () => {
    assert.match(
      problems(loadConfig("serve", { argv: ["--delay", "2h", "--retry-window", "1h"], env: {} })),
      /--retry-window \(3600s\) must be longer than --delay \(7200s\)/,
    );
  });

  it("refuses flags, positional words and repeated flags that do not belong", () => {
    assert.match(problems(loadConfig("serve", { argv: ["extra"], env: {} })), /unexpected argument "extra"/);
    assert.match(problems(loadConfig("serve", { argv: ["--delay"], env: {} })), /--delay needs a value/);
    assert.match(problems(loadConfig("serve", { argv: ["--delay", "1", "--delay", "2"], env: {} })), /given twice/);
  });

  it("maps flags to environment names", () => {
    assert.equal(envName("retry-window"), "GREYFLEET_RETRY_WINDOW");
  });
});
