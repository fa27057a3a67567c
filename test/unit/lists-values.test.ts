import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ListKindName, normaliseEntryValue } from "../../services/decision/domain/lists";

/** Accepted values: [kind, input, canonical form, why]. */
const accepted: [ListKindName, string, string, string][] = [
  ["client_whitelist", "192.0.2.1", "192.0.2.1/32", "an IPv4 address"],
  ["client_whitelist", "  192.0.2.1\t", "192.0.2.1/32", "surrounding whitespace is trimmed"],
  ["client_whitelist", "[192.0.2.1]", "192.0.2.1/32", "an address literal"],
  ["client_whitelist", "192.0.2.0/24", "192.0.2.0/24", "a CIDR"],
  ["client_whitelist", "192.0.2.77/24", "192.0.2.0/24", "host bits are cleared"],
  ["client_whitelist", "0.0.0.0/1", "0.0.0.0/1", "a /1"],
  ["client_whitelist", "10", "10.0.0.0/8", "one octet: a /8"],
  ["client_whitelist", "129.74", "129.74.0.0/16", "two octets: a /16"],
  ["client_whitelist", "192.74.137", "192.74.137.0/24", "three octets: a /24"],
  ["client_whitelist", "192.74.137.", "192.74.137.0/24", "a partial prefix with a trailing dot"],
  ["client_whitelist", "2001:DB8::1", "2001:db8:0:0:0:0:0:1/128", "an IPv6 address"],
  ["client_whitelist", "2001:db8::/32", "2001:db8:0:0:0:0:0:0/32", "an IPv6 CIDR"],
  ["client_whitelist", "2001:db8::1/64", "2001:db8:0:0:0:0:0:0/64", "IPv6 host bits are cleared"],
  ["client_whitelist", "IPv6:2001:db8::1", "2001:db8:0:0:0:0:0:1/128", "sendmail's IPv6: prefix"],
  ["client_whitelist", "::ffff:192.0.2.1", "192.0.2.1/32", "an IPv4-mapped address is IPv4"],
  ["client_whitelist", "::ffff:192.0.2.0/120", "192.0.2.0/24", "an IPv4-mapped CIDR is the IPv4 network"],
  ["client_blacklist", "198.51.100", "198.51.100.0/24", "the blacklist takes the same forms"],
  ["client_name_whitelist", ".Example.COM", ".example.com", "a subdomain suffix, lower-cased"],
  ["client_name_whitelist", "example.com", "example.com", "a domain"],
  ["client_name_whitelist", "*.example.com", ".example.com", "a wildcard is the subdomain suffix"],
  ["client_name_whitelist", "mail.example.com.", "mail.example.com", "a trailing dot is dropped"],
  ["client_name_whitelist", "xn--bcher-kva.example", "xn--bcher-kva.example", "an IDN in ASCII form"],
  ["client_name_whitelist", "mx_1.example.com", "mx_1.example.com", "an underscore"],
  ["client_name_whitelist", "/^Mail-\\D+\\.example\\.com$/", "/^Mail-\\D+\\.example\\.com$/", "a regex, as written"],
  ["sender_whitelist", "News@Example.ORG", "news@example.org", "an address"],
  ["sender_whitelist", "<news@example.org>", "news@example.org", "an address in brackets"],
  ["sender_whitelist", "root@localhost", "root@localhost", "an address at a one-label domain"],
  ["sender_whitelist", "example.org", "example.org", "a domain"],
  ["sender_whitelist", "@example.org", "example.org", "@domain is the domain"],
  ["sender_whitelist", ".example.org", ".example.org", "subdomains"],
  ["recipient_opt_out", "Postmaster@", "postmaster@", "a local part"],
  ["recipient_opt_out", "user@Example.com", "user@example.com", "an address"],
  ["recipient_opt_out", "bob+tag@example.com", "bob+tag@example.com", "an address with an extension"],
  ["recipient_opt_out", "example.com", "example.com", "a domain"],
  ["recipient_opt_out", "@example.com", "example.com", "@domain is the domain"],
  ["recipient_opt_out", ".example.com", ".example.com", "subdomains"],
  ["recipient_opt_out", "/^bounce-[0-9]+@/", "/^bounce-[0-9]+@/", "a regex"],
  [
    "client_name_whitelist",
    "/^(\\w+\\.)+example\\.net$/",
    "/^(\\w+\\.)+example\\.net$/",
    "a repeated group ending in a literal",
  ],
  ["client_name_whitelist", "/^(.+\\.)*example\\.com$/", "/^(.+\\.)*example\\.com$/", "nested repetition (bounded)"],
  ["recipient_opt_out", "/^(\\d|\\w)+@example\\.com$/", "/^(\\d|\\w)+@example\\.com$/", "overlapping alternatives"],
  ["recipient_opt_in", "abuse@", "abuse@", "opt-in takes the same forms"],
  ["greytrap", "Trap@Example.com", "trap@example.com", "a greytrap address"],
];

/** Refused values: [kind, input, what the message must say, why]. */
const refused: [ListKindName, string, RegExp, string][] = [
  ["client_whitelist", "", /empty/, "empty"],
  ["client_whitelist", "   ", /empty/, "only whitespace"],
  ["client_whitelist", "1".repeat(256), /longer than 255/, "too long"],
  ["client_whitelist", "192.0.2.1 192.0.2.2", /whitespace/, "two values"],
  ["client_whitelist", "192.0.2.1\u0000", /control/, "a control character"],
  ["client_whitelist", "192.0.2.1\u200b", /control/, "an invisible format character"],
  ["client_whitelist", "192.0.2.0/33", /33 is more than 32/, "an IPv4 prefix too long"],
  ["client_whitelist", "2001:db8::/129", /129 is more than 128/, "an IPv6 prefix too long"],
  ["client_whitelist", "10.0.0.0/0", /every address/, "a /0"],
  ["client_whitelist", "192.0.2.0/24x", /not a number/, "a prefix length with letters"],
  ["client_whitelist", "192.0.2.0/024", /not a number/, "a prefix length with a leading zero"],
  ["client_whitelist", "192.0.2.0/", /not a number/, "no prefix length"],
  ["client_whitelist", "10.1/16", /not a full IPv4 or IPv6 address/, "a partial address with a length"],
  ["client_whitelist", "::ffff:192.0.2.0/95", /less than 96/, "an IPv4-mapped CIDR shorter than /96"],
  ["client_whitelist", "256.1", /"256" is not an octet/, "an octet over 255"],
  ["client_whitelist", "10.01", /"01" is not an octet/, "an octet with a leading zero"],
  ["client_whitelist", "1.2.3.4.5", /not an IP address/, "five octets"],
  ["client_whitelist", "mail.example.com", /not an IP address/, "a host name"],
  ["client_whitelist", "fe80::1%eth0", /not an IP address/, "a zone id"],
  ["client_blacklist", "example.com", /not an IP address/, "the blacklist refuses names too"],
  ["client_name_whitelist", "com", /single label/, "a top-level domain"],
  ["client_name_whitelist", ".com", /single label/, "every host in a top-level domain"],
  ["client_name_whitelist", "unknown", /single label/, "Postfix's unknown"],
  ["client_name_whitelist", "example..com", /empty label/, "a double dot"],
  ["client_name_whitelist", "..example.com", /empty label/, "a double leading dot"],
  ["client_name_whitelist", "ex!ample.com", /not a host name label/, "punctuation"],
  ["client_name_whitelist", "-mx.example.com", /not a host name label/, "a leading hyphen"],
  ["client_name_whitelist", "bücher.example", /not a host name label/, "a non-ASCII label"],
  ["client_name_whitelist", `${"a".repeat(64)}.example`, /not a host name label/, "a label over 63"],
  ["client_name_whitelist", "192.0.2.1", /looks like an IP address/, "an address"],
  ["client_name_whitelist", "/[unclosed/", /does not compile/, "a broken regex"],
  ["client_name_whitelist", "/mail/i", /without flags/, "a regex with flags"],
  ["client_name_whitelist", "//", /without flags/, "an empty regex"],
  ["client_name_whitelist", `/${"a".repeat(199)}/`, /longer than 200/, "a regex over 200 characters"],
  ["client_name_whitelist", "/^(mx)\\1\\.example$/", /linear time/, "a backreference"],
  ["client_name_whitelist", "/^(?!mx)[a-z]+\\.example$/", /linear time/, "a lookahead"],
  ["recipient_opt_out", "/(?<=bounce-)[0-9]+@/", /linear time/, "a lookbehind in a recipient regex"],
  ["sender_whitelist", "news@", /not a local part/, "a local part"],
  ["sender_whitelist", "<>", /null sender/, "the null sender"],
  ["sender_whitelist", "a@b@example.org", /more than one @/, "two @"],
  ["sender_whitelist", "/^news@/", /regexes are not accepted/, "a regex"],
  ["sender_whitelist", "org", /single label/, "a top-level domain"],
  ["sender_whitelist", "news@example..org", /empty label/, "a bad domain"],
  ["recipient_opt_out", "@", /alone/, "@ alone"],
  ["recipient_opt_out", "com", /single label/, "a top-level domain"],
  ["recipient_opt_out", "/^bob@/i", /without flags/, "a regex with flags"],
  ["recipient_opt_out", "user@@example.com", /more than one @/, "two @"],
  ["recipient_opt_in", "user@exa mple.com", /whitespace/, "a space"],
  ["greytrap", "example.com", /full address/, "a greytrap domain"],
  ["greytrap", ".example.com", /full address/, "greytrap subdomains"],
  ["greytrap", "@example.com", /full address/, "a greytrap @domain"],
  ["greytrap", "trap@", /full address/, "a greytrap local part"],
  ["greytrap", "/^trap/", /full address/, "a greytrap regex"],
];

describe("normaliseEntryValue accepts", () => {
  for (const [kind, input, canonical, why] of accepted) {
    it(`${kind}, ${why}: ${JSON.stringify(input)} -> ${canonical}`, () => {
      assert.equal(normaliseEntryValue(kind, input), canonical);
      assert.equal(normaliseEntryValue(kind, canonical), canonical, "the canonical form is stable");
    });
  }
});

describe("normaliseEntryValue refuses", () => {
  for (const [kind, input, message, why] of refused) {
    it(`${kind}, ${why}: ${JSON.stringify(input.slice(0, 40))}`, () => {
      const result = normaliseEntryValue(kind, input);
      assert.equal(typeof result, "object", `accepted as ${JSON.stringify(result)}`);
      assert.match((result as { error: string }).error, message);
    });
  }
  it("refuses an unknown kind", () => {
    assert.deepEqual(normaliseEntryValue("bogus" as ListKindName, "192.0.2.1"), { error: 'unknown list kind "bogus"' });
  });
});
