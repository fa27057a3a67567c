import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CheckRequest, ProtocolState } from "../../services/contract/gen/greyfleet/v1/greylist";
import { isInvalid, validateCheck } from "../../services/decision/validate";

const good = CheckRequest.fromPartial({
  clientAddress: "192.0.2.1",
  sender: "alice@example.org",
  recipient: "bob@example.com",
  protocolState: ProtocolState.PROTOCOL_STATE_RCPT,
});

describe("validateCheck", () => {
  it("accepts a well-formed request and parses the client address", () => {
    const result = validateCheck(good);
    assert.ok(!isInvalid(result));
    assert.equal(result.client.family, 4);
    assert.equal(result.stage, "rcpt");
  });

  const bad: [name: string, change: Partial<CheckRequest>, field: string, message: RegExp][] = [
    ["missing client address", { clientAddress: "" }, "client_address", /required/],
    ["client address not an IP", { clientAddress: "mail.example.org" }, "client_address", /not an IPv4 or IPv6/],
    ["client address with a zone", { clientAddress: "fe80::1%eth0" }, "client_address", /not an IPv4 or IPv6/],
    ["over-long sender", { sender: `${"a".repeat(310)}@example.org` }, "sender", /longer than 320 bytes/],
    ["over-long multibyte recipient", { recipient: `${"é".repeat(161)}@x` }, "recipient", /longer than 320 bytes/],
    ["over-long HELO", { heloName: "h".repeat(256) }, "helo_name", /longer than 255/],
    ["NUL in the recipient", { recipient: "bob\u0000@example.com" }, "recipient", /control character/],
    ["CR LF in the sender", { sender: "a@b\r\nRCPT TO:<x>" }, "sender", /control character/],
    ["missing recipient at RCPT", { recipient: "" }, "recipient", /required at RCPT/],
    ["unknown protocol state", { protocolState: 7 as ProtocolState }, "protocol_state", /not RCPT or DATA/],
    ["over-long queue id", { queueId: "Q".repeat(65) }, "queue_id", /longer than 64/],
  ];
  for (const [name, change, field, message] of bad) {
    it(`refuses ${name}`, () => {
      const result = validateCheck({ ...good, ...change });
      assert.ok(isInvalid(result), "expected a problem");
      assert.equal(result.field, field);
      assert.match(result.message, message);
    });
  }

  it("allows an empty recipient at DATA and an unspecified state as RCPT", () => {
    const data = validateCheck({ ...good, recipient: "", protocolState: ProtocolState.PROTOCOL_STATE_DATA });
    assert.ok(!isInvalid(data));
    assert.equal(data.stage, "data");
    const unspecified = validateCheck({ ...good, protocolState: ProtocolState.PROTOCOL_STATE_UNSPECIFIED });
    assert.ok(!isInvalid(unspecified));
    assert.equal(unspecified.stage, "rcpt");
  });

  it("accepts UTF-8 addresses within the byte limit", () => {
    assert.ok(!isInvalid(validateCheck({ ...good, sender: "jörg@bücher.example" })));
  });
});
