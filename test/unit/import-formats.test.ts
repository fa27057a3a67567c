import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import {
  DEFAULT_WHITELIST_SOURCE,
  type ImportFormat,
  type ImportResult,
  MAX_IMPORT_ENTRIES,
  MAX_IMPORT_PROBLEMS,
  parseDefaultWhitelist,
  parseImport,
} from "../../services/cli/import-formats";
import { parseIp } from "../../services/decision/domain/ip";
import { Lists } from "../../services/decision/domain/lists";
import { projectFile } from "../../services/shared/paths";

const fixture = (name: string): string => readFileSync(projectFile(`test/fixtures/imports/${name}`), "utf8");
const rows = (result: ImportResult): string[] =>
  result.entries.map((e) => `${e.line} ${e.kind} ${e.value}${e.comment ? ` # ${e.comment}` : ""}`);

/** Checks the problems: [line, the line's text, what the reason must say]. */
function assertProblems(result: ImportResult, expected: [number, string, RegExp][]): void {
  assert.deepEqual(
    result.problems.map((p) => [p.line, p.text]),
    expected.map(([line, text]) => [line, text]),
  );
  for (const [i, problem] of result.problems.entries()) assert.match(problem.problem, expected[i]?.[2] ?? /^$/);
}

describe("parseImport on the fixture files", () => {
  it("reads a postgrey whitelist_clients file", () => {
    const result = parseImport("postgrey-clients", fixture("postgrey_whitelist_clients.local"));
    assert.deepEqual(rows(result), [
      "5 client_name_whitelist example-bulk.net # newsletters; retries come from all over a /16",
      "6 client_name_whitelist .mta.example-mailer.com # its sending hosts, not the domain itself",
      "7 client_name_whitelist /^smtp[0-9]+\\.example-pool\\.org$/",
      "8 client_name_whitelist mx1.partner.example",
      "11 client_whitelist 192.0.2.17/32",
      "12 client_whitelist 198.51.100.0/24 # the old office's /24",
      "13 client_whitelist 10.20.0.0/16 # 10.20.0.0/16 (postgrey reads a two-octet prefix as a /24)",
      "14 client_whitelist 203.0.113.64/26 # host bits set: stored as 203.0.113.64/26",
      "15 client_whitelist 2001:db8:4:0:0:0:0:0/48",
      "16 client_whitelist 192.0.2.128/25 # IPv4-mapped form of 192.0.2.128/25",
    ]);
    assertProblems(result, [
      [19, "300.1.2.3", /not an IP address/],
      [20, "mail.example.com extra-token", /more than one value/],
      [21, "/[unclosed/", /does not compile/],
      [22, "192.0.2.0/33", /33 is more than 32/],
      [23, "com", /single label/],
      [24, "example-bulk.net              # listed twice", /the same entry as line 5/],
    ]);
  });

  it("reads a postgrey whitelist_recipients file", () => {
    const result = parseImport("postgrey-recipients", fixture("postgrey_whitelist_recipients.local"));
    assert.deepEqual(rows(result), [
      "2 recipient_opt_out postmaster@",
      "3 recipient_opt_out abuse@",
      "4 recipient_opt_out hostmaster@example.org",
      "5 recipient_opt_out listmaster+owner@lists.example.org",
      "6 recipient_opt_out example.net # the partner's domain and its subdomains",
      "6 recipient_opt_out .example.net # the partner's domain and its subdomains",
      "7 recipient_opt_out /^bounce-[0-9]+@example\\.org$/",
    ]);
    assertProblems(result, [
      [10, "@", /alone/],
      [11, "user@@example.org", /more than one @/],
      [12, "no spaces@example.org", /more than one value/],
      [13, "/^unterminated", /without flags/],
    ]);
  });

  it("reads a relaydelay-style IP prefix file with Windows line ends", () => {
    const result = parseImport("ip-prefixes", fixture("relaydelay-whitelist-ip.txt"));
    assert.deepEqual(rows(result), [
      "3 client_whitelist 192.0.2.0/24",
      "4 client_whitelist 198.51.100.25/32 # a single host",
      "5 client_whitelist 203.0.113.0/24",
      "6 client_whitelist 129.74.0.0/16 # 129.74.0.0/16",
      "7 client_whitelist 10.0.0.0/8 # 10.0.0.0/8",
      "8 client_whitelist 172.16.0.0/12",
      "9 client_whitelist 2001:db8:0:0:0:0:0:0/32 # IPv6 is accepted too",
    ]);
    assertProblems(result, [
      [12, "192.0.2.              # trailing dot: the same /24 as line 3", /the same entry as line 3/],
      [13, "mail.example.com", /not an IP address/],
      [14, "192.168.01.0/24", /not a full IPv4 or IPv6 address/],
      [15, "10.0.0.0/0", /every address/],
      [16, "1.2.3.4.5", /not an IP address/],
    ]);
  });
});

describe("parseImport line handling", () => {
  const cases: [format: ImportFormat, text: string, entries: string[], problems: number[], why: string][] = [
    ["ip-prefixes", "", [], [], "empty text"],
    ["ip-prefixes", "\n\n  \n# only comments\n   # indented\n", [], [], "blank and comment lines"],
    ["ip-prefixes", "\uFEFF192.0.2.1", ["1 client_whitelist 192.0.2.1/32"], [], "a byte-order mark"],
    [
      "ip-prefixes",
      "192.0.2.1#no space",
      ["1 client_whitelist 192.0.2.1/32 # no space"],
      [],
      "a comment without space",
    ],
    ["ip-prefixes", "192.0.2.1 #", ["1 client_whitelist 192.0.2.1/32"], [], "an empty comment"],
    ["ip-prefixes", "a\r\n192.0.2.1\r\n", ["2 client_whitelist 192.0.2.1/32"], [1], "CRLF line ends"],
    ["ip-prefixes", "10.1\n10.1.0.0/16", ["1 client_whitelist 10.1.0.0/16"], [2], "two forms of one network"],
    ["postgrey-clients", "Mail.Example.COM", ["1 client_name_whitelist mail.example.com"], [], "a host name"],
    ["postgrey-clients", "10.1/16", [], [1], "a partial prefix with a length is an address error"],
    ["postgrey-clients", "2001:db8::1", ["1 client_whitelist 2001:db8:0:0:0:0:0:1/128"], [], "IPv6"],
    ["postgrey-recipients", ".example.com", ["1 recipient_opt_out .example.com"], [], "a .domain stays one entry"],
    [
      "postgrey-recipients",
      "example.com\n.example.com",
      ["1 recipient_opt_out example.com", "1 recipient_opt_out .example.com"],
      [2],
      "a domain covers its subdomains",
    ],
    ["postgrey-recipients", "com", [], [1], "one problem for a refused domain, not two"],
  ];
  for (const [format, text, entries, problems, why] of cases) {
    it(`${format}: ${why}`, () => {
      const result = parseImport(format, text);
      assert.deepEqual(rows(result), entries);
      assert.deepEqual(
        result.problems.map((p) => p.line),
        problems,
      );
    });
  }

  it("cuts the problem text to 100 characters and refuses lines over 1000", () => {
    const result = parseImport("ip-prefixes", `${"x".repeat(150)}\n${"1".repeat(1001)}`);
    assert.equal(result.problems[0]?.text, "x".repeat(100));
    assert.match(result.problems[1]?.problem ?? "", /longer than 1000/);
  });

  it("cuts comments to 200 UTF-8 bytes on a character boundary", () => {
    const result = parseImport("ip-prefixes", `192.0.2.1 # ${"é".repeat(150)}`);
    assert.equal(result.entries[0]?.comment, "é".repeat(100));
  });

  it("never throws, and stops after too many problems", () => {
    const garbage = Array.from({ length: 3000 }, (_, i) => String.fromCharCode(i % 500)).join("\n");
    const result = parseImport("postgrey-clients", garbage);
    assert.equal(result.problems.length, MAX_IMPORT_PROBLEMS + 1);
    assert.match(result.problems.at(-1)?.problem ?? "", /the rest was not read/);
    const unknown = parseImport("bogus" as ImportFormat, "192.0.2.1");
    assert.match(unknown.problems[0]?.problem ?? "", /unknown import format/);
  });

  it(`reads at most ${MAX_IMPORT_ENTRIES} entries`, () => {
    const lines = Array.from(
      { length: MAX_IMPORT_ENTRIES + 2 },
      (_, i) => `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`,
    );
    const result = parseImport("ip-prefixes", lines.join("\n"));
    assert.equal(result.entries.length, MAX_IMPORT_ENTRIES);
    assert.deepEqual(
      result.problems.map((p) => p.line),
      [MAX_IMPORT_ENTRIES + 1, MAX_IMPORT_ENTRIES + 2],
    );
  });
});

describe("parseDefaultWhitelist", () => {
  const text = readFileSync(projectFile("lists/default-whitelist.txt"), "utf8");
  const result = parseDefaultWhitelist(text);
  it("reads the shipped default whitelist without problems", () => {
    assert.deepEqual(result.problems, []);
    assert.ok(result.entries.length >= 20, `only ${result.entries.length} entries`);
    // A regex costs every Check a call into RE2: the shipped lists have none.
    assert.deepEqual(
      result.entries.filter((e) => e.value.startsWith("/")).map((e) => e.value),
      [],
    );
  });
  it("has a whole source comment on every entry", () => {
    for (const entry of result.entries) {
      assert.ok(entry.kind === "client_name_whitelist" || entry.kind === "client_whitelist");
      assert.ok(entry.comment.length > 10, `line ${entry.line} has no source`);
      assert.ok(text.includes(`# ${entry.comment}\n`), `line ${entry.line}: the source was cut`);
    }
  });
  it("matches the big providers' outbound hosts and nothing next to them", () => {
    const lists = new Lists(
      result.entries.map((e) => ({ ...e, expiresAtMs: 0, source: DEFAULT_WHITELIST_SOURCE, createdAtMs: 0 })),
    );
    assert.deepEqual(lists.invalid, []);
    for (const name of [
      "mail-wr1-f54.google.com",
      "mail-db8eur05on2100.outbound.protection.outlook.com",
      "sonic301-20.consmr.mail.ne1.yahoo.com",
      "a8-30.smtp-out.amazonses.com",
      "xvfrpnfh.outbound-mail.sendgrid.net",
      "forward12h.cmail.yandex.net",
      "forward100a.mail.yandex.net",
      "out-21.smtp.github.com",
    ]) {
      assert.equal(lists.clientName(name, 0)?.source, DEFAULT_WHITELIST_SOURCE, name);
    }
    for (const name of ["google.com.evil.example", "evilgoogle.com", "forward1.mail.yandex.net.example", "unknown"]) {
      assert.equal(lists.clientName(name, 0), undefined, name);
    }
    const ipv6 = parseIp("2a01:111:f403:c000::5");
    assert.ok(ipv6);
    assert.ok(lists.client("client_whitelist", ipv6, 0));
  });

  const refused: [line: string, message: RegExp][] = [
    ["client_whitelist 192.0.2.1", /no "# source"/],
    ["client_whitelist 192.0.2.1   #   ", /no "# source"/],
    ["sender_whitelist news@example.org  # someone", /must start with/],
    ["client_whitelist 192.0.2.1 192.0.2.2  # two values", /expected <kind> <value>/],
    ["client_whitelist  # no value", /expected <kind> <value>/],
    ["client_name_whitelist com  # a whole TLD", /single label/],
  ];
  for (const [line, message] of refused) {
    it(`refuses ${JSON.stringify(line)}`, () => {
      const bad = parseDefaultWhitelist(`# header\n${line}\n`);
      assert.deepEqual(bad.entries, []);
      assert.equal(bad.problems.length, 1);
      assert.equal(bad.problems[0]?.line, 2);
      assert.match(bad.problems[0]?.problem ?? "", message);
    });
  }
});
