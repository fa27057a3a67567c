import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { listKindToJSON } from "../../services/contract/gen/greyfleet/v1/admin";
import { type IpAddress, parseIp } from "../../services/decision/domain/ip";
import {
  LIST_KIND_NAMES,
  type ListEntryValue,
  type ListKindName,
  Lists,
  normaliseEntryValue,
} from "../../services/decision/domain/lists";

/** A list entry with a normalised value. */
function entry(kind: ListKindName, value: string, expiresAtMs = 0): ListEntryValue {
  const canonical = normaliseEntryValue(kind, value);
  assert.equal(typeof canonical, "string", `${kind} ${value}: ${JSON.stringify(canonical)}`);
  return { kind, value: canonical as string, expiresAtMs, comment: "", source: "test", createdAtMs: 0 };
}

function ip(text: string): IpAddress {
  const address = parseIp(text);
  assert.ok(address, text);
  return address;
}

describe("LIST_KIND_NAMES", () => {
  it("names the seven kinds of admin.proto's ListKind, in enum order", () => {
    assert.deepEqual(LIST_KIND_NAMES, [
      "client_whitelist",
      "client_name_whitelist",
      "sender_whitelist",
      "recipient_opt_out",
      "recipient_opt_in",
      "client_blacklist",
      "greytrap",
    ]);
    // ... which is what the generated contract calls them.
    assert.deepEqual(
      LIST_KIND_NAMES.map((name) => `LIST_KIND_${name.toUpperCase()}`),
      LIST_KIND_NAMES.map((_, i) => listKindToJSON(i + 1)),
    );
  });
});

describe("Lists.client", () => {
  const lists = new Lists([
    entry("client_whitelist", "10"),
    entry("client_whitelist", "10.20"),
    entry("client_whitelist", "10.20.30.0/24"),
    entry("client_whitelist", "10.20.30.40"),
    entry("client_whitelist", "129.74"),
    entry("client_whitelist", "224.0.0.0/3"),
    entry("client_whitelist", "2001:db8::/32"),
    entry("client_whitelist", "2001:db8:1::/48"),
    entry("client_whitelist", "2001:db8:1::7"),
    entry("client_blacklist", "203.0.113.0/24"),
  ]);
  const cases: [address: string, expected: string | undefined, why: string][] = [
    ["10.20.30.40", "10.20.30.40/32", "an address beats every prefix"],
    ["10.20.30.41", "10.20.30.0/24", "a /24 beats the /16"],
    ["10.20.31.1", "10.20.0.0/16", "the two-octet prefix is a /16, not a /24 as in postgrey"],
    ["10.21.0.1", "10.0.0.0/8", "one octet is a /8"],
    ["129.74.200.7", "129.74.0.0/16", "129.74 = 129.74.0.0/16"],
    ["240.1.1.1", "224.0.0.0/3", "a short prefix"],
    ["11.0.0.1", undefined, "outside every network"],
    ["::ffff:10.20.30.40", "10.20.30.40/32", "an IPv4-mapped client is IPv4"],
    ["::10.20.30.40", undefined, "an IPv4-compatible IPv6 address is not IPv4"],
    ["2001:db8:1::7", "2001:db8:1:0:0:0:0:7/128", "an IPv6 address"],
    ["2001:db8:1:ffff::1", "2001:db8:1:0:0:0:0:0/48", "an IPv6 /48 beats the /32"],
    ["2001:db8:ffff::1", "2001:db8:0:0:0:0:0:0/32", "an IPv6 /32"],
    ["2001:db9::1", undefined, "outside the IPv6 networks"],
    ["203.0.113.9", undefined, "a blacklist entry is not a whitelist entry"],
  ];
  for (const [address, expected, why] of cases) {
    it(`${why}: ${address}`, () => assert.equal(lists.client("client_whitelist", ip(address), 0)?.value, expected));
  }
  it("keeps the blacklist apart", () => {
    assert.equal(lists.client("client_blacklist", ip("203.0.113.9"), 0)?.value, "203.0.113.0/24");
    assert.equal(lists.client("client_blacklist", ip("10.20.30.40"), 0), undefined);
  });
  it("falls back to a shorter prefix when the longer entry has expired", () => {
    const expiring = new Lists([entry("client_whitelist", "192.0.2.0/24", 1000), entry("client_whitelist", "192.0")]);
    assert.equal(expiring.client("client_whitelist", ip("192.0.2.1"), 999)?.value, "192.0.2.0/24");
    assert.equal(expiring.client("client_whitelist", ip("192.0.2.1"), 1000)?.value, "192.0.0.0/16");
  });
  it("returns the first entry in force when a value is listed twice", () => {
    const twice = new Lists([
      { ...entry("client_whitelist", "192.0.2.1", 5), comment: "old" },
      { ...entry("client_whitelist", "192.0.2.1"), comment: "new" },
    ]);
    assert.equal(twice.client("client_whitelist", ip("192.0.2.1"), 4)?.comment, "old");
    assert.equal(twice.client("client_whitelist", ip("192.0.2.1"), 5)?.comment, "new");
  });
  it("indexes a value that is valid but not canonical", () => {
    const raw = new Lists([{ ...entry("client_whitelist", "10.20"), value: "10.20" }]);
    assert.equal(raw.client("client_whitelist", ip("10.20.99.1"), 0)?.value, "10.20");
  });
});

describe("Lists.clientName", () => {
  const lists = new Lists([
    entry("client_name_whitelist", ".mta.example.com"),
    entry("client_name_whitelist", "example.org"),
    entry("client_name_whitelist", "/^smtp[0-9]+\\.pool\\.example$/"),
    entry("client_name_whitelist", "old.example.net", 100),
  ]);
  const cases: [name: string, expected: string | undefined, why: string][] = [
    ["mx1.mta.example.com", ".mta.example.com", "a subdomain of a .suffix"],
    ["a.b.mta.example.com", ".mta.example.com", "a deeper subdomain"],
    ["mta.example.com", undefined, ".suffix does not match the domain itself"],
    ["xmta.example.com", undefined, "suffixes match whole labels"],
    ["example.org", "example.org", "a domain matches itself"],
    ["mx.Example.ORG", "example.org", "and its subdomains, in any case"],
    ["example.org.", "example.org", "a trailing dot"],
    ["badexample.org", undefined, "not a name that merely ends in the text (postgrey's suffix bug)"],
    ["SMTP12.Pool.Example", "/^smtp[0-9]+\\.pool\\.example$/", "a regex, case-insensitive"],
    ["smtp12.pool.example.net", undefined, "a regex is anchored as written"],
    ["old.example.net", undefined, "an expired entry"],
    ["unknown", undefined, "Postfix's name for a client without verified name"],
    ["", undefined, "no name"],
  ];
  for (const [name, expected, why] of cases) {
    it(`${why}: ${JSON.stringify(name)}`, () => assert.equal(lists.clientName(name, 100)?.value, expected));
  }
  it('never matches "unknown", "" or "[address]", even with a regex that matches anything', () => {
    const any = new Lists([entry("client_name_whitelist", "/./")]);
    assert.equal(any.clientName("unknown", 0), undefined);
    assert.equal(any.clientName("", 0), undefined);
    assert.equal(any.clientName("[192.0.2.1]", 0), undefined);
    assert.ok(any.clientName("host.example", 0));
  });
  it("checks expiry against nowMs", () =>
    assert.equal(lists.clientName("old.example.net", 99)?.value, "old.example.net"));
});

describe("Lists.sender", () => {
  const lists = new Lists([
    entry("sender_whitelist", "news@example.org"),
    entry("sender_whitelist", "example.net"),
    entry("sender_whitelist", ".example.com"),
  ]);
  const cases: [sender: string, expected: string | undefined, why: string][] = [
    ["news@example.org", "news@example.org", "an address"],
    ["News@Example.ORG", "news@example.org", "raw case"],
    ["<news@example.org>", "news@example.org", "angle brackets"],
    ["news+weekly@example.org", "news@example.org", "+extension"],
    ["prvs=1234abcdef=news@example.org", "news@example.org", "BATV"],
    ["other@example.org", undefined, "another address at the domain"],
    ["anyone@example.net", "example.net", "a domain"],
    ["anyone@sub.example.net", undefined, "a domain entry does not match subdomains"],
    ["a@mail.example.com", ".example.com", "a .domain entry matches subdomains"],
    ["a@example.com", undefined, "but not the domain itself"],
    ["", undefined, "the null sender"],
    ["<>", undefined, "the null sender in brackets"],
    ["example.net", undefined, "no @"],
  ];
  for (const [sender, expected, why] of cases) {
    it(`${why}: ${JSON.stringify(sender)}`, () => assert.equal(lists.sender(sender, 0)?.value, expected));
  }
});

describe("Lists.recipient", () => {
  const lists = new Lists([
    entry("recipient_opt_out", "postmaster@"),
    entry("recipient_opt_out", "bob@example.com"),
    entry("recipient_opt_out", "carol+list@example.com"),
    entry("recipient_opt_out", "example.net"),
    entry("recipient_opt_out", ".example.org"),
    entry("recipient_opt_out", "/^bounce-[0-9]+@example\\.com$/"),
    entry("recipient_opt_in", "dave@example.com"),
    entry("greytrap", "trap@example.com"),
  ]);
  const optOut: [recipient: string, expected: string | undefined, why: string][] = [
    ["Postmaster@anything.example", "postmaster@", "a local part at any domain"],
    ["postmaster", "postmaster@", "a local part without domain (RCPT TO:<postmaster>)"],
    ["postmaster+x@a.example", "postmaster@", "a local part with +extension"],
    ["bob@example.com", "bob@example.com", "an address"],
    ["<Bob+Tag@Example.COM>", "bob@example.com", "an address with +extension, brackets and case"],
    ["bobby@example.com", undefined, "another local part"],
    ["+bob@example.com", undefined, "a leading + is not an extension"],
    ["carol+list@example.com", "carol+list@example.com", "an entry with an extension"],
    ["carol@example.com", undefined, "matches that extension only"],
    ["x@example.net", "example.net", "a domain"],
    ["x@sub.example.net", undefined, "a domain entry does not match subdomains"],
    ["x@sub.example.org", ".example.org", "a .domain entry matches subdomains"],
    ["x@example.org", undefined, "but not the domain itself"],
    ["bounce-123@example.com", "/^bounce-[0-9]+@example\\.com$/", "a regex"],
    ["bounce-x@example.com", undefined, "a regex that does not match"],
    ["dave@example.com", undefined, "an opt-in entry"],
    ["", undefined, "empty"],
  ];
  for (const [recipient, expected, why] of optOut) {
    it(`opt-out, ${why}: ${JSON.stringify(recipient)}`, () =>
      assert.equal(lists.recipient("recipient_opt_out", recipient, 0)?.value, expected));
  }
  it("keeps opt-in and greytraps apart", () => {
    assert.equal(lists.recipient("recipient_opt_in", "Dave+x@example.com", 0)?.value, "dave@example.com");
    assert.equal(lists.recipient("recipient_opt_in", "bob@example.com", 0), undefined);
    assert.equal(lists.recipient("greytrap", "trap@example.com", 0)?.value, "trap@example.com");
    assert.equal(lists.recipient("greytrap", "trap+probe@example.com", 0)?.value, "trap@example.com");
    assert.equal(lists.recipient("greytrap", "bob@example.com", 0), undefined);
    assert.equal(lists.recipient("greytrap", "trap@example.org", 0), undefined);
  });
  it("matches in a list that holds only a regex, and never in an empty list", () => {
    const regexOnly = new Lists([
      entry("recipient_opt_out", "/^list-[a-z]+@example\\.com$/"),
      entry("sender_whitelist", "news@example.org"),
    ]);
    assert.equal(
      regexOnly.recipient("recipient_opt_out", "List-X@example.com", 0)?.value,
      "/^list-[a-z]+@example\\.com$/",
    );
    assert.equal(regexOnly.recipient("greytrap", "list-x@example.com", 0), undefined);
    assert.equal(regexOnly.sender("news@example.org", 0)?.value, "news@example.org");
    assert.equal(regexOnly.clientName("mx.example.org", 0), undefined);
  });
});

describe("Lists.sizes and has", () => {
  const lists = new Lists([
    entry("client_whitelist", "192.0.2.1"),
    entry("client_whitelist", "192.0.2.2"),
    entry("client_whitelist", "192.0.2.3", 1000),
    entry("greytrap", "trap@example.com", 500),
  ]);
  const zero = Object.fromEntries(LIST_KIND_NAMES.map((kind) => [kind, 0]));
  it("counts the entries in force by kind", () => {
    assert.deepEqual(lists.sizes(0), { ...zero, client_whitelist: 3, greytrap: 1 });
    assert.deepEqual(lists.sizes(500), { ...zero, client_whitelist: 3, greytrap: 0 });
    assert.deepEqual(lists.sizes(1000), { ...zero, client_whitelist: 2, greytrap: 0 });
  });
  it("says whether a kind has an entry in force", () => {
    assert.equal(lists.has("greytrap", 499), true);
    assert.equal(lists.has("greytrap", 500), false);
    assert.equal(lists.has("client_whitelist", 10_000), true);
    assert.equal(lists.has("recipient_opt_in", 0), false);
  });
  it("is empty without entries", () => assert.deepEqual(new Lists([]).sizes(0), zero));
});

describe("Lists with invalid entries", () => {
  it("leaves them out, lists them and indexes the rest", () => {
    const bad = { ...entry("client_whitelist", "192.0.2.1"), value: "mail.example.com" };
    const unknownKind = { ...entry("client_whitelist", "192.0.2.1"), kind: "bogus" as ListKindName };
    const lists = new Lists([bad, unknownKind, entry("client_whitelist", "192.0.2.9")]);
    assert.equal(lists.invalid.length, 2);
    assert.equal(lists.invalid[0]?.entry, bad);
    assert.match(lists.invalid[0]?.problem ?? "", /not an IP address/);
    assert.match(lists.invalid[1]?.problem ?? "", /unknown list kind/);
    assert.equal(lists.client("client_whitelist", ip("192.0.2.9"), 0)?.value, "192.0.2.9/32");
    assert.equal(lists.sizes(0).client_whitelist, 1);
  });
});

describe("Lists with many entries", () => {
  const entries: ListEntryValue[] = [];
  for (let i = 0; i < 50_000; i++) entries.push(entry("client_whitelist", `10.${i >> 8}.${i & 255}.0/24`));
  for (let i = 0; i < 1_000; i++) entries.push(entry("client_whitelist", `2001:db8:${i.toString(16)}::/48`));
  for (let i = 0; i < 5_000; i++) entries.push(entry("client_name_whitelist", `.pool${i}.example.com`));
  const lists = new Lists(entries);
  it("matches among 50,000 IPv4 and 1,000 IPv6 networks", () => {
    assert.equal(lists.client("client_whitelist", ip("10.0.0.1"), 0)?.value, "10.0.0.0/24");
    assert.equal(lists.client("client_whitelist", ip("10.195.79.200"), 0)?.value, "10.195.79.0/24");
    assert.equal(lists.client("client_whitelist", ip("10.195.80.1"), 0), undefined);
    assert.equal(lists.client("client_whitelist", ip("11.0.0.1"), 0), undefined);
    assert.equal(lists.client("client_whitelist", ip("2001:db8:3e7::1"), 0)?.value, "2001:db8:3e7:0:0:0:0:0/48");
    assert.equal(lists.client("client_whitelist", ip("2001:db8:3e8::1"), 0), undefined);
  });
  it("matches among 5,000 name suffixes", () => {
    assert.equal(lists.clientName("mx.pool4999.example.com", 0)?.value, ".pool4999.example.com");
    assert.equal(lists.clientName("mx.pool5000.example.com", 0), undefined);
  });
  it("counts them", () => {
    const sizes = lists.sizes(0);
    assert.equal(sizes.client_whitelist, 51_000);
    assert.equal(sizes.client_name_whitelist, 5_000);
  });
});
