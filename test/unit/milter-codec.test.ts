import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, it } from "node:test";
import {
  type MilterCommand,
  type MilterCommandKind,
  MilterDecoder,
  parseCommand,
  stripAngleBrackets,
} from "../../services/milter/codec";
import * as C from "../../services/milter/constants";
import {
  encodeAddHeader,
  encodeContinue,
  encodeFrame,
  encodeOptnegReply,
  encodeReplyCode,
  MAX_REPLY_TEXT_BYTES,
} from "../../services/milter/encode";
import { GREYLIST_MACROS, negotiate } from "../../services/milter/negotiate";
import { projectFile } from "../../services/shared/paths";

interface Packet {
  dir: "MTA->milter" | "milter->MTA";
  name: string;
  hex: string;
}

const FIXTURES = "test/fixtures/milter";

function capture(file: string): Packet[] {
  const text = readFileSync(projectFile(`${FIXTURES}/${file}`), "utf8");
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as Packet);
}

function mtaStream(packets: Packet[]): Buffer {
  return Buffer.concat(packets.filter((p) => p.dir === "MTA->milter").map((p) => Buffer.from(p.hex, "hex")));
}

function decodeAll(chunks: Buffer[]): { commands: MilterCommand[]; error: string | undefined; pending: number } {
  const decoder = new MilterDecoder();
  const commands: MilterCommand[] = [];
  for (const chunk of chunks) {
    const out = decoder.push(chunk);
    commands.push(...out.commands);
    if (out.error) return { commands, error: out.error.code, pending: decoder.pending };
  }
  return { commands, error: undefined, pending: decoder.pending };
}

/** Deterministic PRNG (mulberry32), so a failing split is reproducible. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomSplit(stream: Buffer, next: () => number): Buffer[] {
  const chunks: Buffer[] = [];
  let at = 0;
  while (at < stream.length) {
    const size = 1 + Math.floor(next() * 40);
    chunks.push(stream.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

const KIND_OF_NAME: Record<string, MilterCommandKind> = {
  SMFIC_OPTNEG: "optneg",
  SMFIC_MACRO: "macro",
  SMFIC_CONNECT: "connect",
  SMFIC_HELO: "helo",
  SMFIC_MAIL: "mail",
  SMFIC_RCPT: "rcpt",
  SMFIC_DATA: "data",
  SMFIC_HEADER: "header",
  SMFIC_EOH: "eoh",
  SMFIC_BODY: "body",
  SMFIC_BODYEOB: "bodyeob",
  SMFIC_ABORT: "abort",
  SMFIC_QUIT: "quit",
  SMFIC_UNKNOWN: "unknown",
};

const files = readdirSync(projectFile(FIXTURES)).filter((f) => f.endsWith(".jsonl"));

describe("milter decoder: captured Postfix/miltertest transcripts, byte for byte", () => {
  it("has the capture files", () => assert.ok(files.length >= 10, `only ${files.length} fixtures`));
  for (const file of files) {
    const packets = capture(file);
    const stream = mtaStream(packets);
    const kinds = packets.filter((p) => p.dir === "MTA->milter").map((p) => KIND_OF_NAME[p.name]);
    it(`${file}: whole stream in one read`, () => {
      const whole = decodeAll([stream]);
      assert.equal(whole.error, undefined);
      assert.equal(whole.pending, 0);
      assert.deepEqual(
        whole.commands.map((c) => c.kind),
        kinds,
      );
    });
    it(`${file}: random splits and one byte per read give the same commands`, () => {
      const whole = decodeAll([stream]).commands;
      const next = random(file.length);
      for (let round = 0; round < 25; round++) assert.deepEqual(decodeAll(randomSplit(stream, next)).commands, whole);
      assert.deepEqual(decodeAll([...stream].map((b) => Buffer.of(b))).commands, whole);
    });
  }

  it("decodes the fields of a real session (xclient conn2, macros, ESMTP args)", () => {
    const commands = decodeAll([mtaStream(capture("milter-xclient-192.0.2.1-conn2.jsonl"))]).commands;
    assert.deepEqual(commands[0], { kind: "optneg", version: 6, actions: 0x1ff, protocol: 0x1fffff });
    const macro = commands[1];
    assert.ok(macro?.kind === "macro");
    assert.equal(macro.stage, "C");
    assert.equal(macro.macros.get("_"), "client.example.net [192.0.2.1]");
    assert.equal(macro.macros.get("{daemon_addr}"), "127.0.0.1");
    assert.deepEqual(commands[2], {
      kind: "connect",
      hostname: "client.example.net",
      family: "4",
      port: 54321,
      address: "192.0.2.1",
    });
    assert.deepEqual(commands[3], { kind: "macro", stage: "H", macros: new Map() });
    assert.deepEqual(commands[6], {
      kind: "mail",
      rawAddress: "<sender@example.org>",
      address: "sender@example.org",
      args: [],
    });
    const multi = decodeAll([mtaStream(capture("milter-multi-msg-conn1.jsonl"))]).commands;
    assert.ok(multi.some((c) => c.kind === "mail" && c.address === "b@example.org" && c.args[0] === "SIZE=100"));
    assert.ok(multi.some((c) => c.kind === "mail" && c.rawAddress === "<>" && c.address === ""));
    assert.ok(multi.some((c) => c.kind === "header" && c.name === "Subject" && c.value === "msg2"));
    assert.ok(multi.some((c) => c.kind === "body" && c.chunk.toString() === "body two\r\n"));
  });
});

describe("milter decoder: framing", () => {
  const quit = encodeFrame(C.SMFIC_QUIT);
  const helo = encodeFrame(C.SMFIC_HELO, Buffer.from("client.example.net\0"));
  const stream = Buffer.concat([helo, quit, helo]);

  it("returns several frames from one read", () => {
    assert.deepEqual(
      decodeAll([stream]).commands.map((c) => c.kind),
      ["helo", "quit", "helo"],
    );
  });

  it("handles a stream split into two reads at every byte", () => {
    const whole = decodeAll([stream]).commands;
    for (let at = 0; at <= stream.length; at++) {
      assert.deepEqual(decodeAll([stream.subarray(0, at), stream.subarray(at)]).commands, whole, `split at ${at}`);
    }
  });

  it("holds a truncated frame without a result and reports the pending bytes", () => {
    const decoder = new MilterDecoder();
    for (let at = 1; at < helo.length; at++) {
      const fresh = new MilterDecoder();
      assert.deepEqual(fresh.push(helo.subarray(0, at)), { commands: [] }, `first ${at} bytes`);
      assert.equal(fresh.pending, at);
    }
    // A client that disconnects mid-frame: the server sees pending > 0 at EOF and logs it.
    decoder.push(Buffer.concat([quit, helo.subarray(0, 7)]));
    assert.equal(decoder.pending, 7);
    assert.equal(decoder.push(helo.subarray(7)).commands[0]?.kind, "helo");
    assert.equal(decoder.pending, 0);
  });

  const bad: [name: string, bytes: string, code: string][] = [
    ["a zero-length frame", "00000000", "zero_length"],
    ["a length of 2^31, refused from the header alone", "80000000", "frame_too_large"],
    ["a length of 2^32-1", "ffffffff", "frame_too_large"],
    ["a length one above the default cap", "00010001", "frame_too_large"],
    ["an unknown command byte", "000000017a", "unknown_command"],
    ["OPTNEG with 11 data bytes", `0000000c4f${"00".repeat(11)}`, "bad_optneg"],
    ["OPTNEG with 13 data bytes", `0000000e4f${"00".repeat(13)}`, "bad_optneg"],
    ["DATA with data", "000000025400", "unexpected_data"],
  ];
  for (const [name, hex, code] of bad) {
    it(`refuses ${name}, keeps the commands before it, and stays failed`, () => {
      const decoder = new MilterDecoder();
      const out = decoder.push(Buffer.concat([quit, Buffer.from(hex, "hex"), quit]));
      assert.deepEqual(
        out.commands.map((c) => c.kind),
        ["quit"],
      );
      assert.equal(out.error?.code, code);
      assert.equal(decoder.push(quit).error?.code, code);
      assert.deepEqual(decoder.push(quit).commands, []);
    });
  }

  it("refuses a huge length as soon as its 4th header byte arrives, without waiting for data", () => {
    const decoder = new MilterDecoder();
    assert.deepEqual(decoder.push(Buffer.from("8000", "hex")), { commands: [] });
    assert.equal(decoder.push(Buffer.from("00", "hex")).error, undefined);
    assert.equal(decoder.push(Buffer.from("00", "hex")).error?.code, "frame_too_large");
  });

  it("takes a configurable cap", () => {
    const body = (n: number) => encodeFrame(C.SMFIC_BODY, Buffer.alloc(n - 1));
    assert.equal(new MilterDecoder({ maxFrameBytes: 100 }).push(body(100)).commands[0]?.kind, "body");
    assert.equal(new MilterDecoder({ maxFrameBytes: 100 }).push(body(101)).error?.code, "frame_too_large");
    assert.equal(new MilterDecoder().push(body(65536)).commands[0]?.kind, "body");
    assert.throws(() => new MilterDecoder({ maxFrameBytes: 0 }), RangeError);
  });
});

describe("milter commands: payload validation", () => {
  const parse = (command: number, data: string) => parseCommand({ command, data: Buffer.from(data, "latin1") });
  const rows: [name: string, command: number, data: string, expected: MilterCommand | string][] = [
    [
      "CONNECT IPv4",
      C.SMFIC_CONNECT,
      "[127.0.0.1]\x004\xd4\x31127.0.0.1\0",
      { kind: "connect", hostname: "[127.0.0.1]", family: "4", port: 54321, address: "127.0.0.1" },
    ],
    [
      "CONNECT IPv6 as Postfix sends it",
      C.SMFIC_CONNECT,
      "[::1]\x006\xde\xa2::1\0",
      { kind: "connect", hostname: "[::1]", family: "6", port: 0xdea2, address: "::1" },
    ],
    [
      "CONNECT IPv6 as sendmail sends it",
      C.SMFIC_CONNECT,
      "localhost\x006\x00\x19IPv6:::1\0",
      { kind: "connect", hostname: "localhost", family: "6", port: 25, address: "IPv6:::1" },
    ],
    [
      "CONNECT unix socket",
      C.SMFIC_CONNECT,
      "localhost\0L\0\0/run/smtp\0",
      { kind: "connect", hostname: "localhost", family: "L", port: 0, address: "/run/smtp" },
    ],
    [
      "CONNECT unknown family: no port, no address",
      C.SMFIC_CONNECT,
      "localhost\0U",
      { kind: "connect", hostname: "localhost", family: "U", port: undefined, address: undefined },
    ],
    ["CONNECT hostname without NUL", C.SMFIC_CONNECT, "client.example.net", "bad_connect"],
    ["CONNECT without family", C.SMFIC_CONNECT, "host\0", "bad_connect"],
    ["CONNECT with family X", C.SMFIC_CONNECT, "host\0X\0\x19a\0", "bad_connect"],
    ["CONNECT without port", C.SMFIC_CONNECT, "host\x004\0", "bad_connect"],
    ["CONNECT address without NUL", C.SMFIC_CONNECT, "host\x004\0\x19192.0.2.1", "bad_connect"],
    ["CONNECT family U with an address", C.SMFIC_CONNECT, "host\0U\0\0x\0", "bad_connect"],
    ["empty MACRO list", C.SMFIC_MACRO, "H", { kind: "macro", stage: "H", macros: new Map() }],
    [
      "MACRO for a stage libmilter ignores",
      C.SMFIC_MACRO,
      "Li\0F02E52100F2\0",
      { kind: "macro", stage: "L", macros: new Map([["i", "F02E52100F2"]]) },
    ],
    [
      "MACRO with an empty value",
      C.SMFIC_MACRO,
      "M{mail_addr}\0\0",
      { kind: "macro", stage: "M", macros: new Map([["{mail_addr}", ""]]) },
    ],
    ["MACRO without command code", C.SMFIC_MACRO, "", "bad_macro"],
    ["MACRO name without value (odd count)", C.SMFIC_MACRO, "Mi\0Q1\0j\0", "bad_macro"],
    ["MACRO value without NUL", C.SMFIC_MACRO, "Mi\0Q1", "bad_macro"],
    ["HELO", C.SMFIC_HELO, "client.example.net\0", { kind: "helo", helo: "client.example.net" }],
    ["HELO without NUL", C.SMFIC_HELO, "client.example.net", "bad_string"],
    ["HELO empty", C.SMFIC_HELO, "", "bad_string"],
    [
      "MAIL with ESMTP args",
      C.SMFIC_MAIL,
      "<b@example.org>\0SIZE=100\0BODY=8BITMIME\0",
      { kind: "mail", rawAddress: "<b@example.org>", address: "b@example.org", args: ["SIZE=100", "BODY=8BITMIME"] },
    ],
    ["MAIL null sender", C.SMFIC_MAIL, "<>\0", { kind: "mail", rawAddress: "<>", address: "", args: [] }],
    ["MAIL without NUL", C.SMFIC_MAIL, "<a@b>", "bad_string"],
    ["MAIL empty", C.SMFIC_MAIL, "", "bad_string"],
    [
      "RCPT with NOTIFY",
      C.SMFIC_RCPT,
      "<ok@example.com>\0NOTIFY=NEVER\0",
      { kind: "rcpt", rawAddress: "<ok@example.com>", address: "ok@example.com", args: ["NOTIFY=NEVER"] },
    ],
    ["RCPT arg without NUL", C.SMFIC_RCPT, "<ok@example.com>\0NOTIFY", "bad_string"],
    ["HEADER with empty value", C.SMFIC_HEADER, "X-Empty\0\0", { kind: "header", name: "X-Empty", value: "" }],
    ["HEADER without value", C.SMFIC_HEADER, "Subject\0", "bad_string"],
    ["UNKNOWN", C.SMFIC_UNKNOWN, "XYZZY\0", { kind: "unknown", command: "XYZZY" }],
    ["BODYEOB without data", C.SMFIC_BODYEOB, "", { kind: "bodyeob", chunk: Buffer.alloc(0) }],
    ["QUIT_NC", C.SMFIC_QUIT_NC, "", { kind: "quit_nc" }],
    ["ABORT with data", C.SMFIC_ABORT, "x", "unexpected_data"],
  ];
  for (const [name, command, data, expected] of rows) {
    it(typeof expected === "string" ? `refuses ${name} (${expected})` : `decodes ${name}`, () => {
      const result = parse(command, data);
      if (typeof expected === "string") {
        assert.ok(!result.ok, "expected an error");
        assert.equal(result.error.code, expected);
      } else {
        assert.ok(result.ok, result.ok ? "" : result.error.message);
        assert.deepEqual(result.value, expected);
      }
    });
  }

  const addresses: [raw: string, stripped: string][] = [
    ["<a@example.org>", "a@example.org"],
    ["<>", ""],
    ["a@example.org", "a@example.org"],
    [" <a@example.org> ", "a@example.org"],
    ["<@relay.example:a@example.org>", "a@example.org"],
    ["<Jörg@bücher.example>", "Jörg@bücher.example"],
  ];
  for (const [raw, stripped] of addresses) {
    it(`strips ${JSON.stringify(raw)} to ${JSON.stringify(stripped)}`, () => {
      assert.equal(stripAngleBrackets(raw), stripped);
    });
  }
});

function capturedReply(file: string, name: string, index = 0): Buffer {
  const found = capture(file).filter((p) => p.dir === "milter->MTA" && p.name === name)[index];
  assert.ok(found, `${name} #${index} in ${file}`);
  return Buffer.from(found.hex, "hex");
}

describe("milter reply encoders", () => {
  it("CONTINUE is 00 00 00 01 63, as captured", () => {
    assert.deepEqual(encodeContinue(), capturedReply("milter-xclient-192.0.2.1-conn2.jsonl", "SMFIR_CONTINUE"));
  });

  it("REPLYCODE matches the captured greylisting reply byte for byte, trailing NUL included", () => {
    const encoded = encodeReplyCode(451, "4.7.1", "Greylisted, please try again later");
    assert.ok(encoded.ok);
    assert.deepEqual(encoded.value, capturedReply("milter-xclient-192.0.2.1-conn2.jsonl", "SMFIR_REPLYCODE"));
    assert.equal(encoded.value.at(-1), 0);
  });

  it("REPLYCODE doubles every '%', as captured", () => {
    const encoded = encodeReplyCode(451, "4.7.1", "Greylisted 100% of the time");
    assert.ok(encoded.ok);
    assert.deepEqual(encoded.value, capturedReply("milter-rcpt-tempfail-conn1.jsonl", "SMFIR_REPLYCODE", 2));
    const twice = encodeReplyCode(450, "", "50% 5%%");
    assert.ok(twice.ok);
    assert.equal(twice.value.subarray(5).toString("latin1"), "450 50%% 5%%%%\0");
  });

  it("REPLYCODE keeps the space after a bare code", () => {
    const bare = encodeReplyCode(451, "", "");
    assert.ok(bare.ok);
    assert.equal(bare.value.toString("latin1"), "\0\0\0\x06y451 \0");
  });

  const badReplies: [name: string, code: number, enhanced: string, text: string][] = [
    ["a 2xx code", 250, "2.0.0", "ok"],
    ["a 6xx code", 600, "", "x"],
    ["a fractional code", 451.5, "", "x"],
    ["a class mismatch", 451, "5.7.1", "x"],
    ["a malformed enhanced code", 451, "4.7", "x"],
    ["CR LF in the text", 451, "4.7.1", "line1\r\n451 4.7.1 line2"],
    ["a bare LF", 451, "4.7.1", "a\nb"],
    ["a NUL", 451, "4.7.1", "a\0b"],
    ["an over-long text", 451, "4.7.1", "x".repeat(MAX_REPLY_TEXT_BYTES + 1)],
  ];
  for (const [name, code, enhanced, text] of badReplies) {
    it(`REPLYCODE refuses ${name}`, () => {
      const result = encodeReplyCode(code, enhanced, text);
      assert.ok(!result.ok);
      assert.equal(result.error.code, "bad_reply");
    });
  }

  it("ADDHEADER matches the captured X-Greylist packet", () => {
    const encoded = encodeAddHeader("X-Greylist", "delayed by harness");
    assert.ok(encoded.ok);
    assert.deepEqual(encoded.value, capturedReply("milter-greylist-profile-conn1.jsonl", "SMFIR_ADDHEADER"));
    assert.equal(encodeAddHeader("X Greylist", "v").ok, false);
    assert.equal(encodeAddHeader("X-Greylist:", "v").ok, false);
    assert.equal(encodeAddHeader("X-Greylist", "a\r\n b").ok, false);
  });

  it("OPTNEG reply with macro lists matches the captured greylist-profile reply", () => {
    const encoded = encodeOptnegReply({
      version: 6,
      actions: C.SMFIF_ADDHDRS | C.SMFIF_SETSYMLIST,
      protocol: 0x3b70,
      macros: [
        { stage: C.SMFIM_CONNECT, names: "{client_addr} {client_name} {client_port} j {daemon_name}" },
        { stage: C.SMFIM_ENVFROM, names: "i {auth_authen} {mail_addr}" },
        { stage: C.SMFIM_ENVRCPT, names: "i {rcpt_addr} {rcpt_mailer} {rcpt_host}" },
      ],
    });
    assert.ok(encoded.ok);
    assert.deepEqual(encoded.value, capturedReply("milter-greylist-profile-conn1.jsonl", "SMFIC_OPTNEG(reply)"));
    const withoutSymlist = encodeOptnegReply({ version: 6, actions: 0, protocol: 0, macros: GREYLIST_MACROS });
    assert.equal(withoutSymlist.ok, false);
  });
});

describe("milter negotiation", () => {
  const postfix = { version: 6, actions: 0x1ff, protocol: 0x1fffff };
  const WANT = 0x3170; // NOBODY|NOHDRS|NOEOH|NOUNKNOWN|NR_CONN|NR_HELO; NODATA deliberately absent

  it("answers Postfix/sendmail's offer with the greylisting profile and our macro lists", () => {
    const result = negotiate(postfix);
    assert.ok(result.ok);
    const n = result.value;
    assert.equal(n.version, 6);
    assert.equal(n.actions, C.SMFIF_ADDHDRS | C.SMFIF_SETSYMLIST);
    assert.equal(n.protocol, WANT);
    // The reference profile (libmilter, honoured by Postfix 3.7.11) is 0x3370; we keep DATA.
    assert.equal(n.protocol, 0x3370 & ~C.SMFIP_NODATA);
    assert.equal(n.noReply.connect && n.noReply.helo, true);
    assert.equal(n.noReply.mail || n.noReply.rcpt || n.noReply.data || n.noReply.header, false);
    assert.equal(n.hasDataStep, true);
    const records = [
      [0, "{client_addr} {client_name} {daemon_name} j"],
      [2, "{auth_authen} {mail_addr} i"],
      [3, "{rcpt_addr} i"],
      [4, "i"],
      [5, "i"],
    ] as const;
    const expected = Buffer.concat([
      Buffer.from("000000060000010100003170", "hex"),
      ...records.map(([stage, names]) => Buffer.concat([Buffer.of(0, 0, 0, stage), Buffer.from(`${names}\0`)])),
    ]);
    assert.deepEqual(n.reply, encodeFrame(C.SMFIC_OPTNEG, expected));
  });

  const offers: [
    name: string,
    offer: { version: number; actions: number; protocol: number },
    expected: { version: number; actions: number; protocol: number; connect: boolean; helo: boolean; data: boolean },
  ][] = [
    [
      "an older version 2 (no UNKNOWN, DATA or NR_* steps)",
      { version: 2, actions: 0x3f, protocol: 0x7f },
      { version: 2, actions: 0x1, protocol: 0x70, connect: false, helo: false, data: false },
    ],
    [
      "version 2 claiming every v6 bit: bits v2 lacks are not requested",
      { version: 2, actions: 0x1ff, protocol: 0x1fffff },
      { version: 2, actions: 0x1, protocol: 0x70, connect: false, helo: false, data: false },
    ],
    [
      "version 3",
      { version: 3, actions: 0x3f, protocol: 0x17f },
      { version: 3, actions: 0x1, protocol: 0x170, connect: false, helo: false, data: false },
    ],
    [
      "version 4",
      { version: 4, actions: 0x3f, protocol: 0x37f },
      { version: 4, actions: 0x1, protocol: 0x170, connect: false, helo: false, data: true },
    ],
    [
      "version 6 without NR_CONN",
      { version: 6, actions: 0x1ff, protocol: 0x1fffff & ~C.SMFIP_NR_CONN },
      { version: 6, actions: 0x101, protocol: 0x2170, connect: false, helo: true, data: true },
    ],
    [
      "version 6 offering no skips and no ADDHDRS",
      { version: 6, actions: 0x100, protocol: C.SMFIP_NR_HELO },
      { version: 6, actions: 0x100, protocol: C.SMFIP_NR_HELO, connect: false, helo: true, data: true },
    ],
    [
      "a future version 7",
      { version: 7, actions: 0xffff, protocol: 0xffffffff },
      { version: 6, actions: 0x101, protocol: WANT, connect: true, helo: true, data: true },
    ],
  ];
  for (const [name, offer, expected] of offers) {
    it(`answers ${name} within the offer`, () => {
      const result = negotiate(offer);
      assert.ok(result.ok);
      const n = result.value;
      assert.deepEqual(
        {
          version: n.version,
          actions: n.actions,
          protocol: n.protocol,
          connect: n.noReply.connect,
          helo: n.noReply.helo,
          data: n.hasDataStep,
        },
        expected,
      );
      assert.equal(n.actions & ~offer.actions, 0);
      assert.equal(n.protocol & ~offer.protocol, 0);
      assert.equal(n.canAddHeader, (n.actions & C.SMFIF_ADDHDRS) !== 0);
      // Macro lists only with SETSYMLIST; without them the reply is the bare 13-byte packet.
      assert.equal(n.reply.length === 17, (n.actions & C.SMFIF_SETSYMLIST) === 0);
    });
  }

  it("refuses an MTA below version 2", () => {
    for (const version of [0, 1]) {
      const result = negotiate({ version, actions: 0x1ff, protocol: 0x1fffff });
      assert.ok(!result.ok);
      assert.equal(result.error.code, "unsupported_version");
    }
  });
});
