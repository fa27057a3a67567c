import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { describe, it } from "node:test";
import { compileListRegex } from "../../services/decision/domain/list-regex";
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

const matches = (pattern: string, text: string): boolean => {
  const compiled = compileListRegex(pattern);
  assert.ok("regex" in compiled, JSON.stringify(compiled));
  return compiled.regex.test(text);
};

describe("list regexes", () => {
  it("match any case, with capitals in the pattern or in the text", () => {
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

  it("mean what JavaScript's regexes mean, counted repetitions and class ranges included", () => {
    assert.equal(matches("^[a-z0-9-]{1,63}\\.mail\\.example\\.com$", `${"a".repeat(63)}.mail.example.com`), true);
    assert.equal(matches("^[a-z0-9-]{1,63}\\.mail\\.example\\.com$", `${"a".repeat(64)}.mail.example.com`), false);
    assert.equal(matches("^[0-9a-f]{40}@bounce\\.example$", `${"ab".repeat(20)}@bounce.example`), true);
    assert.equal(matches("^[A-z]+\\.example$", "a_b.example"), true, "[A-z] holds _ as in JavaScript");
    assert.equal(matches("^[0-Z]+\\.example$", "a_b.example"), false, "[0-Z] does not");
    assert.equal(matches("^(?:mx|relay)\\d+\\.", "RELAY7.example"), true);
  });

  it("refuse what cannot run in linear time, and what does not compile, saying so", () => {
    for (const pattern of ["(mx)\\1", "^(?=mx)", "(?<=bounce-)[0-9]+", "[unclosed", "a{1001}"]) {
      const compiled = compileListRegex(pattern);
      assert.ok("error" in compiled, pattern);
      assert.match(compiled.error, /^regex does not compile: .*linear time/, pattern);
    }
  });

  it("answer in linear time on text made to make a backtracking engine take exponential time", () => {
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
