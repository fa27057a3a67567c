import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  actionProblem,
  type DecodeResult,
  encodeDeferIfPermit,
  encodeDunno,
  encodePrepend,
  encodeReject,
  encodeReply,
  encodeSmtpReply,
  MAX_ACTION_BYTES,
  PolicyDecoder,
  type PolicyLimits,
  PolicyProtocolError,
  type PolicyRequest,
  toPolicyRequest,
} from "../../services/policy/codec";

/**
 * Requests copied byte for byte from a real Postfix 3.7.11 capture
 * (reference/captures/postfix-policy-transcript.log: conn 1 request 1, the XCLIENT conn 3
 * request 1, the END-OF-MESSAGE request of conn 4).
 */
const CAPTURE = {
  RCPT_GREYTEST: `request=smtpd_access_policy
protocol_state=RCPT
protocol_name=ESMTP
client_address=127.0.0.1
client_name=unknown
client_port=60172
reverse_client_name=unknown
server_address=127.0.0.1
server_port=10025
helo_name=client.example.net
sender=sender@example.org
recipient=greytest@example.com
recipient_count=0
queue_id=
instance=42cb.6b08bf55.1a52a.0
size=0
etrn_domain=
stress=
sasl_method=
sasl_username=
sasl_sender=
ccert_subject=
ccert_issuer=
ccert_fingerprint=
ccert_pubkey_fingerprint=
encryption_protocol=
encryption_cipher=
encryption_keysize=0
policy_context=

`,
  RCPT_XCLIENT: `request=smtpd_access_policy
protocol_state=RCPT
protocol_name=ESMTP
client_address=192.0.2.1
client_name=client.example.net
client_port=54321
reverse_client_name=client.example.net
server_address=127.0.0.1
server_port=10025
helo_name=client.example.net
sender=sender@example.org
recipient=mgrey@example.com
recipient_count=0
queue_id=
instance=5b42.6b08c03e.ea265.0
size=0
etrn_domain=
stress=
sasl_method=
sasl_username=
sasl_sender=
ccert_subject=
ccert_issuer=
ccert_fingerprint=
ccert_pubkey_fingerprint=
encryption_protocol=
encryption_cipher=
encryption_keysize=0
policy_context=

`,
  END_OF_MESSAGE: `request=smtpd_access_policy
protocol_state=END-OF-MESSAGE
protocol_name=ESMTP
client_address=127.0.0.1
client_name=unknown
client_port=59944
reverse_client_name=unknown
server_address=127.0.0.1
server_port=10025
helo_name=client.example.net
sender=sender@example.org
recipient=
recipient_count=2
queue_id=BDEC7210029
instance=6d9c.6b08c150.bb3c5.0
size=277
etrn_domain=
stress=
sasl_method=
sasl_username=
sasl_sender=
ccert_subject=
ccert_issuer=
ccert_fingerprint=
ccert_pubkey_fingerprint=
encryption_protocol=
encryption_cipher=
encryption_keysize=0
policy_context=

`,
} as const;

/** Byte sizes the capture recorded for each request, so a fixture that lost a byte fails loudly. */
const CAPTURE_BYTES = { RCPT_GREYTEST: 568, RCPT_XCLIENT: 587, END_OF_MESSAGE: 571 } as const;

type Chunk = string | Uint8Array;

/** Feeds chunks to one decoder until it fails, as the server does, and returns all results in order. */
function decode(chunks: readonly Chunk[], limits: Partial<PolicyLimits> = {}): DecodeResult[] {
  const decoder = new PolicyDecoder(limits);
  const results: DecodeResult[] = [];
  for (const chunk of chunks) {
    if (decoder.error) break;
    results.push(...decoder.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk));
  }
  return results;
}

function onlyRequest(results: readonly DecodeResult[]): ReadonlyMap<string, string> {
  assert.equal(results.length, 1, `expected one result, got ${JSON.stringify(results)}`);
  const [result] = results;
  assert.ok(result?.kind === "request", `expected a request, got ${JSON.stringify(result)}`);
  return result.attributes;
}

function lastError(results: readonly DecodeResult[]): PolicyProtocolError {
  const last = results.at(-1);
  assert.ok(last instanceof PolicyProtocolError, `expected an error last, got ${JSON.stringify(results)}`);
  return last;
}

function policy(attributes: ReadonlyMap<string, string>): PolicyRequest {
  const request = toPolicyRequest(attributes);
  assert.ok(!(request instanceof PolicyProtocolError), `unexpected ${JSON.stringify(request)}`);
  return request;
}

describe("PolicyDecoder on captured Postfix requests", () => {
  const expected: [name: keyof typeof CAPTURE, fields: Partial<PolicyRequest>][] = [
    [
      "RCPT_GREYTEST",
      {
        request: "smtpd_access_policy",
        protocol_state: "RCPT",
        protocol_name: "ESMTP",
        client_address: "127.0.0.1",
        client_name: "unknown",
        reverse_client_name: "unknown",
        helo_name: "client.example.net",
        sender: "sender@example.org",
        recipient: "greytest@example.com",
        recipient_count: 0,
        queue_id: "",
        instance: "42cb.6b08bf55.1a52a.0",
        size: 0,
        server_address: "127.0.0.1",
        server_port: "10025",
        sasl_username: "",
        policy_context: "",
      },
    ],
    [
      "RCPT_XCLIENT",
      { client_address: "192.0.2.1", client_name: "client.example.net", recipient: "mgrey@example.com" },
    ],
    [
      "END_OF_MESSAGE",
      { protocol_state: "END-OF-MESSAGE", recipient: "", recipient_count: 2, size: 277, queue_id: "BDEC7210029" },
    ],
  ];
  for (const [name, fields] of expected) {
    const text = CAPTURE[name];

    it(`${name}: decodes all 29 attributes and the typed fields`, () => {
      assert.equal(Buffer.byteLength(text), CAPTURE_BYTES[name]);
      const attributes = onlyRequest(decode([text]));
      assert.equal(attributes.size, 29);
      // Attributes greylisting ignores are kept for the caller to ignore.
      assert.notEqual(attributes.get("client_port"), undefined);
      assert.equal(attributes.get("ccert_fingerprint"), "");
      assert.equal(attributes.get("encryption_keysize"), "0");
      const request = policy(attributes);
      // Overlaying the expected fields changes nothing only if they all match.
      assert.deepEqual({ ...request, ...fields }, request);
    });

    it(`${name}: gives the same request when split into two chunks at every byte`, () => {
      const bytes = Buffer.from(text);
      const whole = onlyRequest(decode([bytes]));
      for (let at = 0; at <= bytes.length; at += 1) {
        const decoder = new PolicyDecoder();
        assert.deepEqual(
          decoder.push(bytes.subarray(0, at)),
          at === bytes.length ? [{ kind: "request", attributes: whole }] : [],
        );
        const rest = decoder.push(bytes.subarray(at));
        if (at < bytes.length) assert.deepEqual(onlyRequest(rest), whole, `split at ${at}`);
      }
    });

    it(`${name}: gives the same request when fed one byte at a time`, () => {
      const bytes = Buffer.from(text);
      const chunks = [...bytes].map((byte) => Uint8Array.of(byte));
      assert.deepEqual(onlyRequest(decode(chunks)), onlyRequest(decode([bytes])));
    });

    it(`${name}: accepts CRLF line endings`, () => {
      assert.deepEqual(onlyRequest(decode([text.replaceAll("\n", "\r\n")])), onlyRequest(decode([text])));
    });
  }

  it("decodes several requests from one chunk, in order", () => {
    const results = decode([CAPTURE.RCPT_GREYTEST + CAPTURE.RCPT_XCLIENT + CAPTURE.END_OF_MESSAGE]);
    assert.deepEqual(
      results.map((result) => (result.kind === "request" ? result.attributes.get("recipient") : result.code)),
      ["greytest@example.com", "mgrey@example.com", ""],
    );
  });

  it("keeps a request split across chunks that also carry the next one", () => {
    const all = CAPTURE.RCPT_GREYTEST + CAPTURE.RCPT_XCLIENT;
    const results = decode([all.slice(0, 600), all.slice(600, 601), all.slice(601)]);
    assert.deepEqual(
      results.map((result) => (result.kind === "request" ? result.attributes.get("recipient") : result.code)),
      ["greytest@example.com", "mgrey@example.com"],
    );
    assert.deepEqual(results, decode([all]));
  });
});

describe("PolicyDecoder on multi-byte UTF-8 split across chunks", () => {
  it("decodes the same value whichever byte the split falls on", () => {
    const bytes = Buffer.from("sender=j\u00f6rg@b\u00fccher.example\nrecipient=\u20ac@\u{1f600}.example\n\n");
    for (let at = 0; at <= bytes.length; at += 1) {
      const attributes = onlyRequest(decode([bytes.subarray(0, at), bytes.subarray(at)]));
      assert.equal(attributes.get("sender"), "j\u00f6rg@b\u00fccher.example", `split at ${at}`);
      assert.equal(attributes.get("recipient"), "\u20ac@\u{1f600}.example", `split at ${at}`);
    }
  });
});

describe("PolicyDecoder waiting for more input", () => {
  const truncated: [name: string, chunks: Chunk[]][] = [
    ["no final empty line", [CAPTURE.RCPT_GREYTEST.slice(0, -1)]],
    ["ends mid-line", ["request=smtpd_access_policy\nsender=a@exa"]],
    ["ends after a CR", ["request=smtpd_access_policy\r"]],
    ["ends after the CR of the empty line", ["request=smtpd_access_policy\n\r"]],
    ["nothing yet", [""]],
    ["half of a two-byte UTF-8 character", [Buffer.from("sender=j\u00f6rg").subarray(0, -1)]],
  ];
  for (const [name, chunks] of truncated) {
    it(`returns no result and no error: ${name}`, () => {
      const decoder = new PolicyDecoder();
      for (const chunk of chunks) assert.deepEqual(decoder.push(Buffer.from(chunk)), []);
      assert.equal(decoder.error, undefined);
    });
  }
});

describe("PolicyDecoder attribute rules", () => {
  const cases: [name: string, input: string, want: [string, string][]][] = [
    ["a value may contain '='", "policy_context=a=b=c\n\n", [["policy_context", "a=b=c"]]],
    ["an empty value", "queue_id=\n\n", [["queue_id", ""]]],
    ["a tab inside a value", "helo_name=a\tb\n\n", [["helo_name", "a\tb"]]],
    ["the last of repeated names wins", "sender=a@x\nsender=b@x\n\n", [["sender", "b@x"]]],
    ["names are lower-cased", "Client_Address=192.0.2.1\n\n", [["client_address", "192.0.2.1"]]],
    [
      "unknown attributes are kept",
      "mail_version=3.8.0\ntls_sni=mx.example\n\n",
      [
        ["mail_version", "3.8.0"],
        ["tls_sni", "mx.example"],
      ],
    ],
    ["UTF-8 values", "sender=j\u00f6rg@b\u00fccher.example\n\n", [["sender", "j\u00f6rg@b\u00fccher.example"]]],
    ["an empty request", "\n", []],
    [
      "control characters Postfix passed on are kept",
      "helo_name=\u001b[31m\u007f\rx\n\n",
      [["helo_name", "\u001b[31m\u007f\rx"]],
    ],
  ];
  for (const [name, input, want] of cases) {
    it(name, () => {
      assert.deepEqual([...onlyRequest(decode([input]))], want);
    });
  }
  const eightBit: [name: string, bytes: number[], want: string][] = [
    ["Latin-1 text", [...Buffer.from("j\u00f6rg", "latin1")], "j\u00f6rg"],
    ["a byte that is never UTF-8", [0x61, 0xff], "a\u00ff"],
    ["an overlong encoding", [0xc0, 0xaf], "\u00c0\u00af"],
    ["a cut multi-byte character", [0xe2, 0x82], "\u00e2\u0082"],
  ];
  for (const [name, bytes, want] of eightBit) {
    it(`a value that is not UTF-8 is read as Latin-1, the same on every retry: ${name}`, () => {
      const line = Buffer.from([...Buffer.from("sender="), ...bytes, 0x0a, 0x0a]);
      assert.equal(onlyRequest(decode([line])).get("sender"), want);
    });
  }
});

describe("PolicyDecoder protocol errors", () => {
  const long = "a".repeat(5000);
  const cases: [name: string, chunks: Chunk[], limits: Partial<PolicyLimits>, code: string, requestsBefore: number][] =
    [
      ["a line without '='", ["request=smtpd_access_policy\nDUNNO\n"], {}, "malformed_line", 0],
      ["a line with an empty name", ["=value\n"], {}, "malformed_line", 0],
      ["a name with a hyphen", ["client-address=x\n"], {}, "malformed_line", 0],
      ["a UTF-8 byte order mark before the name", ["\ufeffrequest=smtpd_access_policy\n"], {}, "malformed_line", 0],
      ["a NUL byte in a value", ["sender=a\u0000b\n"], {}, "binary_data", 0],
      ["a NUL byte alone", ["\u0000\n"], {}, "binary_data", 0],
      ["binary junk", [Uint8Array.of(0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x0a)], {}, "binary_data", 0],
      ["a long line with no LF yet", [`sender=${long}`], {}, "line_too_long", 0],
      ["a long line with its LF", [`sender=${long}\n`], {}, "line_too_long", 0],
      ["a line one byte over", [`${"a".repeat(2043)}=12345\n`], {}, "line_too_long", 0],
      ["a line one byte over, CRLF", [`${"a".repeat(2043)}=12345\r\n`], {}, "line_too_long", 0],
      ["a long line over many chunks", Array.from({ length: 40 }, () => "x".repeat(100)), {}, "line_too_long", 0],
      ["101 attributes", [`${"a=1\n".repeat(101)}\n`], {}, "too_many_attributes", 0],
      ["3 attributes over a limit of 2", ["a=1\nb=2\nc=3\n"], { maxAttributes: 2 }, "too_many_attributes", 0],
      ["a request over 16 KiB", [`${`a=${"v".repeat(2000)}\n`.repeat(9)}\n`], {}, "request_too_large", 0],
      [
        "a partial line taking a request over its limit",
        ["a=123456789\nb=1234"],
        { maxRequestBytes: 16 },
        "request_too_large",
        0,
      ],
      [
        "the empty line taking a request over its limit",
        ["a=1234\nb=1234\n\n"],
        { maxRequestBytes: 14 },
        "request_too_large",
        0,
      ],
      ["junk after a good request", [CAPTURE.RCPT_GREYTEST, "GET / HTTP/1.0\r\n"], {}, "malformed_line", 1],
      ["a good request, then an error in the same chunk", [`${CAPTURE.RCPT_XCLIENT}a\u0000\n`], {}, "binary_data", 1],
    ];
  for (const [name, chunks, limits, code, requestsBefore] of cases) {
    it(`${code}: ${name}`, () => {
      const results = decode(chunks, limits);
      assert.equal(lastError(results).code, code);
      assert.equal(results.length, requestsBefore + 1);
      assert.ok(results.slice(0, -1).every((result) => result.kind === "request"));
      // The message quotes at most 40 bytes of what the peer sent.
      assert.doesNotMatch(lastError(results).message, /a{41}|v{41}|x{41}/);
    });
  }

  it("detects an over-long line in the chunk that makes it too long, without waiting for its LF", () => {
    const decoder = new PolicyDecoder({ maxLineBytes: 10 });
    assert.deepEqual(decoder.push(Buffer.from("sender=abc")), []);
    assert.equal(lastError(decoder.push(Buffer.from("d"))).code, "line_too_long");
  });

  it("allows a line of exactly maxLineBytes, with LF or CRLF", () => {
    for (const ending of ["\n", "\r\n"]) {
      const line = `${"a".repeat(2042)}=12345${ending}`;
      assert.equal(line.length - ending.length, 2048);
      assert.equal(onlyRequest(decode([line.slice(0, 2048), line.slice(2048), "\n"])).size, 1);
    }
  });

  it("allows a partial line one byte over maxLineBytes when that byte is the CR of a CRLF", () => {
    const decoder = new PolicyDecoder({ maxLineBytes: 10 });
    assert.deepEqual(decoder.push(Buffer.from("sender=abc")), []);
    assert.deepEqual(decoder.push(Buffer.from("\r")), []);
    assert.deepEqual(onlyRequest(decoder.push(Buffer.from("\n\r\n"))), new Map([["sender", "abc"]]));
  });

  it("allows exactly maxAttributes attributes and exactly maxRequestBytes bytes", () => {
    assert.equal(onlyRequest(decode([`${"a=1\n".repeat(99)}b=1\n\n`])).size, 2);
    assert.equal(onlyRequest(decode(["a=1234\nb=1234\n\n"], { maxRequestBytes: 15 })).size, 2);
  });

  it("stays failed: every later push returns the same error", () => {
    const decoder = new PolicyDecoder();
    const [error] = decoder.push(Buffer.from("nonsense\n"));
    assert.ok(error instanceof PolicyProtocolError);
    assert.equal(decoder.error, error);
    assert.deepEqual(decoder.push(Buffer.from(CAPTURE.RCPT_GREYTEST)), [error]);
  });

  it("refuses limits that are not positive integers", () => {
    for (const limits of [{ maxLineBytes: 0 }, { maxAttributes: -1 }, { maxRequestBytes: 1.5 }]) {
      assert.throws(() => new PolicyDecoder(limits), RangeError);
    }
  });
});

describe("toPolicyRequest", () => {
  it("turns missing attributes into empty strings and zero counts", () => {
    const request = policy(new Map([["request", "smtpd_access_policy"]]));
    assert.equal(request.sender, "");
    assert.equal(request.recipient_count, 0);
    assert.equal(request.size, 0);
    assert.equal(request.policy_context, "");
  });

  const bad: [name: string, attributes: [string, string][], code: string][] = [
    ["no request attribute", [["sender", "a@x"]], "unsupported_request"],
    ["another request type", [["request", "junk"]], "unsupported_request"],
    [
      "a non-numeric size",
      [
        ["request", "smtpd_access_policy"],
        ["size", "12k"],
      ],
      "invalid_attribute",
    ],
    [
      "a negative recipient count",
      [
        ["request", "smtpd_access_policy"],
        ["recipient_count", "-1"],
      ],
      "invalid_attribute",
    ],
    [
      "an enormous size",
      [
        ["request", "smtpd_access_policy"],
        ["size", "9".repeat(16)],
      ],
      "invalid_attribute",
    ],
  ];
  for (const [name, attributes, code] of bad) {
    it(`refuses ${name}`, () => {
      const result = toPolicyRequest(new Map(attributes));
      assert.ok(result instanceof PolicyProtocolError);
      assert.equal(result.code, code);
    });
  }
});

describe("reply encoding", () => {
  // Expected bytes are the replies Postfix accepted in the capture, where one exists.
  const replies: [name: string, encode: () => Buffer, wire: string][] = [
    ["DUNNO", () => encodeDunno(), "action=DUNNO\n\n"],
    [
      "DEFER_IF_PERMIT",
      () => encodeDeferIfPermit("Greylisted, please try again later"),
      "action=DEFER_IF_PERMIT Greylisted, please try again later\n\n",
    ],
    ["DEFER_IF_PERMIT without text", () => encodeDeferIfPermit(""), "action=DEFER_IF_PERMIT\n\n"],
    [
      "explicit SMTP reply",
      () => encodeSmtpReply(451, "4.7.1", "Greylisted for 300 seconds"),
      "action=451 4.7.1 Greylisted for 300 seconds\n\n",
    ],
    ["SMTP reply without enhanced code", () => encodeSmtpReply(450, "", "Try later"), "action=450 Try later\n\n"],
    [
      "PREPEND",
      () => encodePrepend("X-Greylist", "delayed 0 seconds by harness"),
      "action=PREPEND X-Greylist: delayed 0 seconds by harness\n\n",
    ],
    ["REJECT", () => encodeReject("Blocked"), "action=REJECT Blocked\n\n"],
    ["REJECT without text", () => encodeReject(""), "action=REJECT\n\n"],
    [
      "a UTF-8 action",
      () => encodeReply("DEFER_IF_PERMIT gr\u00fc\u00dfe"),
      "action=DEFER_IF_PERMIT gr\u00fc\u00dfe\n\n",
    ],
    [
      "the longest action",
      () => encodeReply("a".repeat(MAX_ACTION_BYTES)),
      `action=${"a".repeat(MAX_ACTION_BYTES)}\n\n`,
    ],
  ];
  for (const [name, encode, wire] of replies) {
    it(`encodes ${name}`, () => {
      assert.equal(encode().toString("utf8"), wire);
    });
  }

  it("keeps every reply under 1000 bytes", () => {
    assert.ok(encodeReply("a".repeat(MAX_ACTION_BYTES)).length < 1000);
  });

  const refused: [name: string, encode: () => Buffer][] = [
    ["an empty action", () => encodeReply("")],
    ["a CR", () => encodeReply("DUNNO\r")],
    ["an LF", () => encodeReply("DUNNO\nREJECT")],
    ["an injected reply", () => encodeDeferIfPermit("x\n\naction=OK")],
    ["a NUL", () => encodeReject("a\u0000b")],
    ["a CR LF in a header value", () => encodePrepend("X-Greylist", "a\r\nX-Other: b")],
    ["a lone surrogate", () => encodeReply("DEFER \ud800")],
    ["an action over the limit", () => encodeReply("a".repeat(MAX_ACTION_BYTES + 1))],
    ["a multi-byte action over the limit in bytes", () => encodeReply("\u00e9".repeat(MAX_ACTION_BYTES / 2 + 1))],
    ["a 2xx code", () => encodeSmtpReply(250, "2.0.0", "Ok")],
    ["a code outside SMTP", () => encodeSmtpReply(4510, "4.7.1", "x")],
    ["an enhanced code of another class", () => encodeSmtpReply(451, "5.7.1", "x")],
    ["a short enhanced code", () => encodeSmtpReply(451, "4.7", "x")],
    ["a header name with a space", () => encodePrepend("X Greylist", "x")],
    ["a header name with a colon", () => encodePrepend("X-Greylist:", "x")],
  ];
  for (const [name, encode] of refused) {
    it(`refuses ${name} with a RangeError`, () => {
      assert.throws(encode, RangeError);
    });
  }

  it("reports the problem with an action without throwing", () => {
    assert.equal(actionProblem("DUNNO"), undefined);
    assert.match(actionProblem("DUNNO\r\n") ?? "", /CR, LF, NUL/);
  });
});
