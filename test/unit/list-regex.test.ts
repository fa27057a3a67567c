import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import { compileListRegex, lowerCasePattern } from "../../services/decision/domain/list-regex";
import {
  type ListEntryValue,
  type ListKindName,
  Lists,
  normaliseEntryValue,
} from "../../services/decision/domain/lists";

function entry(kind: ListKindName, value: string): ListEntryValue {
  const canonical = normaliseEntryValue(kind, value);
  assert.equal(typeof canonical, "string", `${kind} ${value}: ${JSON.stringify(canonical)}`);
  return { kind, value: canonical as string, expiresAtMs: 0, comment: "", source: "test", createdAtMs: 0 };
}

describe("lowerCasePattern", () => {
  const cases: [pattern: string, lower: string, why: string][] = [
    ["^MX[0-9]+\\.Example\\.COM$", "^mx[0-9]+\\.example\\.com$", "literal letters"],
    ["[A-Z]+", "[a-z]+", "a class range"],
    ["\\D\\W\\S\\B\\d\\w\\s\\b", "\\D\\W\\S\\B\\d\\w\\s\\b", "class escapes as written"],
    ["\\x41\\u0042\\x2e", "\\u0061\\u0062\\u002e", "letters written in hex"],
    ["\\cJ\\.\\Z", "\\cj\\.\\z", "other escapes of letters"],
  ];
  for (const [pattern, lower, why] of cases) {
    it(`${why}: ${pattern}`, () => assert.equal(lowerCasePattern(pattern), lower));
  }
});

describe("list regexes", () => {
  it("match any case, with capitals in the pattern and in the text", () => {
    const lists = new Lists([
      entry("client_name_whitelist", "/^SMTP[0-9]+\\.Pool\\.EXAMPLE$/"),
      entry("client_name_whitelist", "/^mx\\D+\\.example\\.org$/"),
      entry("recipient_opt_out", "/^Bounce-\\x41[0-9]+@Example\\.com$/"),
    ]);
    assert.equal(lists.clientName("smtp12.pool.example", 0)?.value, "/^SMTP[0-9]+\\.Pool\\.EXAMPLE$/");
    assert.equal(lists.clientName("SMTP12.POOL.Example", 0)?.value, "/^SMTP[0-9]+\\.Pool\\.EXAMPLE$/");
    assert.equal(lists.clientName("mx-a.example.org", 0)?.value, "/^mx\\D+\\.example\\.org$/");
    assert.equal(lists.clientName("mx12.example.org", 0), undefined, "\\D stays a non-digit");
    assert.equal(
      lists.recipient("recipient_opt_out", "BOUNCE-a7@example.COM", 0)?.value,
      "/^Bounce-\\x41[0-9]+@Example\\.com$/",
    );
  });

  it("refuse what the linear-time engine cannot run, and what does not compile", () => {
    assert.match(String((compileListRegex("(mx)\\1") as { error: string }).error), /bounded time/);
    assert.match(String((compileListRegex("^(?=mx)") as { error: string }).error), /bounded time/);
    assert.match(String((compileListRegex("[unclosed") as { error: string }).error), /does not compile/);
    assert.ok("regex" in compileListRegex("^(.+\\.)*example\\.com$"));
  });

  it("answer in bounded time on text made to make a backtracking engine take exponential time", () => {
    // In a child process, killed after 60 s: a match that backtracks exponentially would never
    // end (2^60 ways to split the name), and blocks the event loop a test timeout runs on.
    const script = `
      const { Lists, normaliseEntryValue } = require(${JSON.stringify(require.resolve("../../services/decision/domain/lists"))});
      const entry = (kind, value) => ({ kind, value: normaliseEntryValue(kind, value), expiresAtMs: 0, comment: "", source: "t", createdAtMs: 0 });
      const lists = new Lists([
        entry("client_name_whitelist", "/^(.+\\\\.)*example\\\\.com$/"),
        entry("recipient_opt_out", "/^(\\\\d|\\\\w)+@example\\\\.com$/"),
      ]);
      process.stdout.write(JSON.stringify([
        lists.clientName("a.".repeat(60) + "example.com.evil.net", 0)?.value ?? null,
        lists.clientName("mx.a.example.com", 0)?.value ?? null,
        lists.recipient("recipient_opt_out", "1".repeat(100) + "-@example.com", 0)?.value ?? null,
        lists.recipient("recipient_opt_out", "bob1@example.com", 0)?.value ?? null,
      ]));`;
    const output = execFileSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 60_000 });
    assert.deepEqual(JSON.parse(output), [null, "/^(.+\\.)*example\\.com$/", null, "/^(\\d|\\w)+@example\\.com$/"]);
  });
});
