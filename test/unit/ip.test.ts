import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatIp, maskIp, parseIp } from "../../services/decision/domain/ip";

describe("parseIp", () => {
  const valid: [input: string, family: 4 | 6, text: string][] = [
    ["192.0.2.1", 4, "192.0.2.1"],
    ["0.0.0.0", 4, "0.0.0.0"],
    ["255.255.255.255", 4, "255.255.255.255"],
    ["::1", 6, "0:0:0:0:0:0:0:1"],
    ["::", 6, "0:0:0:0:0:0:0:0"],
    ["2001:db8::", 6, "2001:db8:0:0:0:0:0:0"],
    ["2001:DB8:0:0:1::2", 6, "2001:db8:0:0:1:0:0:2"],
    ["2001:db8:1:2:3:4:5:6", 6, "2001:db8:1:2:3:4:5:6"],
    ["IPv6:2001:db8::1", 6, "2001:db8:0:0:0:0:0:1"],
    ["ipv6:::1", 6, "0:0:0:0:0:0:0:1"],
    ["[2001:db8::1]", 6, "2001:db8:0:0:0:0:0:1"],
    ["::ffff:192.0.2.7", 4, "192.0.2.7"],
    ["64:ff9b::192.0.2.33", 6, "64:ff9b:0:0:0:0:c000:221"],
  ];
  for (const [input, family, text] of valid) {
    it(`parses ${input}`, () => {
      const ip = parseIp(input);
      assert.ok(ip, `${input} should parse`);
      assert.equal(ip.family, family);
      assert.equal(formatIp(ip), text);
    });
  }

  const invalid = [
    "",
    "unknown",
    "192.0.2",
    "192.0.2.256",
    "192.0.2.01",
    "192.0.2.1.5",
    " 192.0.2.1",
    "1::2::3",
    "2001:db8:1:2:3:4:5:6:7",
    "2001:db8:1:2:3:4:5",
    "12345::",
    "fe80::1%eth0",
    "::ffff:300.1.1.1",
    "1.2.3.4::",
    "1.2.3.4::1",
    "1:1.2.3.4::",
    "g::1",
    `${"1:".repeat(30)}1`,
  ];
  for (const input of invalid) {
    it(`refuses ${JSON.stringify(input)}`, () => assert.equal(parseIp(input), undefined));
  }
});

describe("maskIp", () => {
  it("clears host bits of IPv4 and IPv6", () => {
    const v4 = parseIp("198.51.100.77");
    const v6 = parseIp("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff");
    assert.ok(v4 && v6);
    assert.equal(formatIp(maskIp(v4, 24)), "198.51.100.0");
    assert.equal(formatIp(maskIp(v4, 19)), "198.51.96.0");
    assert.equal(formatIp(maskIp(v4, 32)), "198.51.100.77");
    assert.equal(formatIp(maskIp(v6, 64)), "2001:db8:aaaa:bbbb:0:0:0:0");
    assert.equal(formatIp(maskIp(v6, 56)), "2001:db8:aaaa:bb00:0:0:0:0");
    assert.equal(formatIp(maskIp(v6, 128)), "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff");
  });
});
