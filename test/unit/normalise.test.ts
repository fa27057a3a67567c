import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseIp } from "../../services/decision/domain/ip";
import { clientNetwork, normaliseRecipient, normaliseSender } from "../../services/decision/domain/normalise";

describe("normaliseSender", () => {
  const cases: [input: string, expected: string, why: string][] = [
    ["", "", "null sender"],
    ["<>", "", "null sender in brackets"],
    ["Alice@Example.ORG", "alice@example.org", "case"],
    ["<alice@example.org>", "alice@example.org", "angle brackets"],
    ["alice+newsletter@example.org", "alice@example.org", "+extension"],
    ["prvs=1234abcdef=alice@example.org", "alice@example.org", "BATV prvs"],
    ["PRVS=0123ABC456=Alice@Example.org", "alice@example.org", "BATV prvs, upper case"],
    ["msprvs1=17abcdef=bob@example.net", "bob@example.net", "BATV msprvs1"],
    ["btv1==0a1b2c3d==carol@example.com", "carol@example.com", "BATV btv1"],
    ["SRS0=HHH1=TT=orig.example=dave@forwarder.example", "srs0=orig.example=dave@forwarder.example", "SRS0"],
    ["SRS0=zz9Q=5X=orig.example=dave@forwarder.example", "srs0=orig.example=dave@forwarder.example", "SRS0 other day"],
    [
      "SRS1=HHH=first.example==HHH=TT=orig.example=dave@second.example",
      "srs1=first.example=orig.example=dave@second.example",
      "SRS1",
    ],
    ["bounce-1234-5678@list.example", "bounce-#-#@list.example", "VERP digit runs"],
    ["bounce-99-1@list.example", "bounce-#-#@list.example", "VERP digit runs, another message"],
    ["list-bounces+bob=example.com@lists.example", "list-bounces@lists.example", "VERP in +extension"],
    ["msg-5f3a9c0d1e2b@mailer.example", "msg-#@mailer.example", "long hex token"],
    ["user2@example.org", "user2@example.org", "digits inside a word are kept"],
    ["123456789@qq.com", "123456789@qq.com", "a numeric mailbox is kept"],
    ["13800138000@163.com", "13800138000@163.com", "a phone-number mailbox is kept"],
    ["deadbeef99@example.net", "deadbeef99@example.net", "a hex-like mailbox is kept"],
    [
      "SRS0=HHH1=TT=qq.com=123456789@forwarder.example",
      "srs0=qq.com=123456789@forwarder.example",
      "SRS0 of a numeric mailbox",
    ],
    ["deadbeefcafe@example.org", "deadbeefcafe@example.org", "hex without a digit is a word"],
    ["+only@example.org", "+only@example.org", "a leading + is not an extension"],
    ["postmaster", "postmaster", "no domain"],
  ];
  for (const [input, expected, why] of cases) {
    it(`${why}: ${JSON.stringify(input)} -> ${JSON.stringify(expected)}`, () => {
      assert.equal(normaliseSender(input), expected);
    });
  }
});

describe("normaliseRecipient", () => {
  it("lower-cases and strips brackets, keeping the extension", () => {
    assert.equal(normaliseRecipient("<Bob+Tag@Example.COM>"), "bob+tag@example.com");
  });
});

describe("clientNetwork", () => {
  const grouping = { ipv4PrefixLength: 24, ipv6PrefixLength: 64 };
  const network = (address: string, g = grouping) => {
    const ip = parseIp(address);
    assert.ok(ip);
    return clientNetwork(ip, g);
  };
  it("groups IPv4 by /24 and IPv6 by /64 by default", () => {
    assert.equal(network("192.0.2.1"), "192.0.2.0/24");
    assert.equal(network("192.0.2.254"), network("192.0.2.1"));
    assert.notEqual(network("192.0.3.1"), network("192.0.2.1"));
    assert.equal(network("2001:db8:1:2:a::1"), "2001:db8:1:2:0:0:0:0/64");
    assert.equal(network("2001:db8:1:2:ffff::9"), network("2001:db8:1:2::1"));
    assert.notEqual(network("2001:db8:1:3::1"), network("2001:db8:1:2::1"));
  });
  it("uses the configured prefix lengths", () => {
    const wide = { ipv4PrefixLength: 16, ipv6PrefixLength: 48 };
    assert.equal(network("192.0.77.1", wide), "192.0.0.0/16");
    assert.equal(network("2001:db8:1:2::1", wide), "2001:db8:1:0:0:0:0:0/48");
  });
  it("treats an IPv4-mapped IPv6 client as IPv4", () => {
    assert.equal(network("::ffff:192.0.2.9"), "192.0.2.0/24");
  });
  it("groups a client behind the well-known NAT64 prefix by the IPv4 address it carries", () => {
    assert.equal(network("64:ff9b::192.0.2.9"), "192.0.2.0/24");
    assert.equal(network("64:ff9b::c000:2fe"), network("192.0.2.254"));
    assert.notEqual(network("64:ff9b::198.51.100.1"), network("64:ff9b::192.0.2.9"));
    // Only the well-known /96: a neighbouring prefix is an ordinary IPv6 network.
    assert.equal(network("64:ff9b:1::192.0.2.9"), "64:ff9b:1:0:0:0:0:0/64");
  });
});
