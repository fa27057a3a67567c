import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { type MilterCommand, MilterDecoder } from "../../services/milter/codec";
import * as C from "../../services/milter/constants";
import { encodeFrame } from "../../services/milter/encode";
import {
  type CheckFields,
  type Decision,
  initialSession,
  type SessionEffect,
  type SessionState,
  transition,
} from "../../services/milter/session";
import { projectFile } from "../../services/shared/paths";

interface Packet {
  dir: "MTA->milter" | "milter->MTA";
  name: string;
  hex: string;
}

function capture(file: string): Packet[] {
  const text = readFileSync(projectFile(`test/fixtures/milter/${file}`), "utf8");
  return text
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as Packet);
}

/** Decodes bytes as the server would, optionally one read per `chunk` bytes. */
function decode(bytes: Buffer, chunk = bytes.length || 1): MilterCommand[] {
  const decoder = new MilterDecoder();
  const commands: MilterCommand[] = [];
  for (let at = 0; at < bytes.length; at += chunk) {
    const out = decoder.push(bytes.subarray(at, at + chunk));
    assert.equal(out.error, undefined);
    commands.push(...out.commands);
  }
  assert.equal(decoder.pending, 0);
  return commands;
}

/** One reply packet per entry, summarised for comparison. */
function packets(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; ) {
    const end = at + 4 + bytes.readUInt32BE(at);
    out.push(bytes.subarray(at, end));
    at = end;
  }
  return out;
}

function summary(packet: Buffer): string {
  const command = String.fromCharCode(packet[4] ?? 0);
  const data = packet.subarray(5);
  switch (command) {
    case "c":
      return "continue";
    case "t":
      return "tempfail";
    case "r":
      return "reject";
    case "y":
      return `replycode ${data.toString("latin1")}`;
    case "h":
      return `addheader ${data.toString("latin1").split("\0").slice(0, 2).join(": ")}`;
    case "O":
      return `optneg v${data.readUInt32BE(0)} a=0x${data.readUInt32BE(4).toString(16)} p=0x${data.readUInt32BE(8).toString(16)}`;
    default:
      return `${command} ${data.toString("hex")}`;
  }
}

interface Run {
  state: SessionState;
  /** Every reply effect's bytes: one entry per write. */
  writes: Buffer[];
  replies: string[];
  checks: CheckFields[];
  closes: SessionEffect[];
}

type Decide = (request: CheckFields) => Decision | undefined;

/** Drives the session as the server would, answering each check with `decide` (undefined: no answer yet). */
function drive(commands: readonly MilterCommand[], decide: Decide, start = initialSession()): Run {
  const run: Run = { state: start, writes: [], replies: [], checks: [], closes: [] };
  const apply = (effects: readonly SessionEffect[]): void => {
    for (const effect of effects) {
      if (effect.kind === "reply") {
        run.writes.push(effect.bytes);
        run.replies.push(...packets(effect.bytes).map(summary));
      } else if (effect.kind === "close") {
        run.closes.push(effect);
      } else {
        run.checks.push(effect.request);
        const decision = decide(effect.request);
        if (decision === undefined) continue;
        const next = transition(run.state, { kind: "decision", checkId: effect.checkId, decision });
        run.state = next.state;
        apply(next.effects);
      }
    }
  };
  for (const command of commands) {
    const next = transition(run.state, { kind: "command", command });
    run.state = next.state;
    apply(next.effects);
  }
  return run;
}

const GREY = "Greylisted, please try again later";
const accept = (xGreylistHeader = ""): Decision => ({
  action: "accept",
  smtpCode: 0,
  enhancedStatusCode: "",
  smtpText: "",
  xGreylistHeader,
});
const defer = (smtpText = GREY, smtpCode = 451, enhancedStatusCode = "4.7.1"): Decision => ({
  action: "defer",
  smtpCode,
  enhancedStatusCode,
  smtpText,
  xGreylistHeader: "",
});
const reject = (smtpText = "Blocked", smtpCode = 554, enhancedStatusCode = "5.7.1"): Decision => ({
  action: "reject",
  smtpCode,
  enhancedStatusCode,
  smtpText,
  xGreylistHeader: "",
});

/** The harness's rules, applied like the decision engine: null sender accepted at RCPT, decided at DATA. */
function harness(headers: Record<string, string> = {}, nullSenderAtData: Decision = accept()): Decide {
  return (request) => {
    const local = request.recipient.split("@")[0] ?? "";
    if (request.sender === "" && request.stage === "rcpt") return accept();
    if (request.stage === "data") return request.sender === "" ? nullSenderAtData : accept();
    if (local === "hang") return undefined;
    if (local === "pct") return defer("Greylisted 100% of the time");
    if (local.includes("grey") || local === "tfail") return defer();
    return accept(headers[request.recipient] ?? "");
  };
}

const OPTNEG = "optneg v6 a=0x101 p=0x3170";
const CONT = "continue";
const Y451 = `replycode 451 4.7.1 ${GREY}\0`;
const XG = "addheader X-Greylist: delayed by harness";

describe("milter session: replaying captured transcripts", () => {
  const rows: [file: string, decide: Decide, replies: string[], end: SessionState["phase"]][] = [
    ["milter-start-probe-connect-quit.jsonl", harness(), [OPTNEG], "closed"],
    ["milter-xclient-192.0.2.1-conn1.jsonl", harness(), [OPTNEG], "closed"],
    ["milter-xclient-192.0.2.1-conn2.jsonl", harness(), [OPTNEG, CONT, Y451], "closed"],
    ["milter-e2e-miltertest-conn2.jsonl", harness(), [OPTNEG, CONT, Y451, CONT, Y451], "closed"],
    [
      "milter-e2e-miltertest-conn3.jsonl",
      harness({ "ok@example.com": "delayed by harness" }),
      [OPTNEG, CONT, Y451, CONT, Y451, CONT, CONT, CONT, CONT, CONT, XG, CONT],
      "closed",
    ],
    [
      "milter-greylist-profile-conn1.jsonl",
      harness({ "ok@example.com": "delayed by harness" }),
      [OPTNEG, CONT, Y451, CONT, Y451, CONT, XG, CONT],
      "closed",
    ],
    ["milter-policy-stages-conn1.jsonl", harness(), [OPTNEG, CONT, CONT, CONT, CONT], "closed"],
    [
      "milter-rcpt-tempfail-conn1.jsonl",
      harness(),
      [OPTNEG, CONT, Y451, CONT, Y451, "replycode 451 4.7.1 Greylisted 100%% of the time\0", Y451, CONT].concat(
        Array(6).fill(CONT),
        [CONT, CONT, CONT],
      ),
      "closed",
    ],
    [
      "milter-multi-msg-conn1.jsonl",
      harness({}, accept("delayed by harness")),
      [OPTNEG, CONT, CONT, CONT, Y451, CONT, CONT, CONT, CONT, CONT, CONT, CONT, CONT, CONT].concat([
        CONT,
        CONT,
        CONT,
        CONT,
        CONT,
        CONT,
        CONT,
        CONT,
        CONT,
        XG,
        CONT,
      ]),
      "closed",
    ],
    ["milter-timeout-progress-conn1.jsonl", harness(), [OPTNEG, CONT, CONT], "awaiting_decision"],
    ["milter-unknown-cmd-session.jsonl", harness(), [OPTNEG, CONT, CONT, CONT, CONT], "closed"],
  ];
  for (const [file, decide, replies, end] of rows) {
    const transcript = capture(file);
    const stream = Buffer.concat(
      transcript.filter((p) => p.dir === "MTA->milter").map((p) => Buffer.from(p.hex, "hex")),
    );
    it(`${file}: replies as a greylisting filter should`, () => {
      for (const chunk of [stream.length, 1, 7, 64]) {
        const run = drive(decode(stream, chunk), decide);
        assert.deepEqual(run.replies, replies, `reads of ${chunk} bytes`);
        assert.equal(run.state.phase, end);
        if (end === "closed") assert.deepEqual(run.closes, [{ kind: "close", reason: "quit" }]);
        else assert.deepEqual(run.closes, []);
      }
    });
    const captured = new Map(
      transcript.filter((p) => p.dir === "milter->MTA").map((p) => [summary(Buffer.from(p.hex, "hex")), p.hex]),
    );
    // Our replies that mean the same as one of the capture's: each is compared byte for byte.
    const comparable = replies.filter((reply) => captured.has(reply)).length;
    // Nothing to compare for the start probe and the first XCLIENT connection: they end before any
    // recipient, so our only reply is OPTNEG, and the captured filter negotiated differently (no
    // actions, replies to CONNECT and HELO). The test above checks their replies.
    if (comparable === 0) continue;
    it(`${file}: every reply that means the same as the capture's is byte-identical to it`, () => {
      const run = drive(decode(stream), decide);
      let compared = 0;
      for (const packet of run.writes.flatMap(packets)) {
        const hex = captured.get(summary(packet));
        if (hex === undefined) continue;
        assert.equal(packet.toString("hex"), hex, summary(packet));
        compared++;
      }
      assert.equal(compared, comparable, "replies compared with the capture");
    });
  }

  it("fills each check from the CONNECT packet, HELO, MAIL and the macros", () => {
    const run = drive(decode(streamOf("milter-greylist-profile-conn1.jsonl")), harness());
    assert.deepEqual(
      run.checks.map((c) => [c.stage, c.recipient, c.queueId]),
      [
        ["rcpt", "greytest@example.com", ""],
        ["rcpt", "ok@example.com", ""],
        ["rcpt", "mgrey@example.com", "CAC7E2100C4"],
        ["rcpt", "nosuch@elsewhere.test", "CAC7E2100C4"],
      ],
    );
    assert.deepEqual(run.checks[0], {
      stage: "rcpt",
      clientAddress: "127.0.0.1",
      clientName: "unknown",
      heloName: "client.example.net",
      sender: "sender@example.org",
      recipient: "greytest@example.com",
      saslUsername: "",
      queueId: "",
      localClient: false,
      authenticated: false,
    });
    // Postfix defaults: no {client_addr} macro, so the address comes from the CONNECT packet.
    const xclient = drive(decode(streamOf("milter-xclient-192.0.2.1-conn2.jsonl")), harness());
    assert.equal(xclient.checks[0]?.clientAddress, "192.0.2.1");
    assert.equal(xclient.checks[0]?.clientName, "client.example.net");
  });

  it("writes X-Greylist and CONTINUE at end of message as one buffer", () => {
    const run = drive(decode(streamOf("milter-greylist-profile-conn1.jsonl")), harness({ "ok@example.com": "v" }));
    const last = run.writes.at(-1);
    assert.ok(last);
    assert.deepEqual(packets(last).map(summary), ["addheader X-Greylist: v", CONT]);
  });
});

function streamOf(file: string): Buffer {
  return Buffer.concat(
    capture(file)
      .filter((p) => p.dir === "MTA->milter")
      .map((p) => Buffer.from(p.hex, "hex")),
  );
}

// Builders for synthetic sessions: encoded to bytes and decoded again, as the server would see them.
const frame = (command: number, data = ""): Buffer => encodeFrame(command, Buffer.from(data, "latin1"));
const optneg = (version = 6, actions = 0x1ff, protocol = 0x1fffff): Buffer => {
  const data = Buffer.alloc(12);
  data.writeUInt32BE(version, 0);
  data.writeUInt32BE(actions, 4);
  data.writeUInt32BE(protocol, 8);
  return encodeFrame(C.SMFIC_OPTNEG, data);
};
const macro = (stage: string, pairs: Record<string, string> = {}): Buffer =>
  frame(
    C.SMFIC_MACRO,
    stage +
      Object.entries(pairs)
        .map(([n, v]) => `${n}\0${v}\0`)
        .join(""),
  );
const connect = (host: string, family: string, address?: string): Buffer =>
  frame(C.SMFIC_CONNECT, `${host}\0${family}${address === undefined ? "" : `\x30\x39${address}\0`}`);
const helo = (name = "client.example.net"): Buffer => frame(C.SMFIC_HELO, `${name}\0`);
const mail = (address: string): Buffer => frame(C.SMFIC_MAIL, `<${address}>\0`);
const rcpt = (address: string): Buffer => frame(C.SMFIC_RCPT, `<${address}>\0`);
const DATA = frame(C.SMFIC_DATA);
const EOM = frame(C.SMFIC_BODYEOB);
const ABORT = frame(C.SMFIC_ABORT);
const QUIT = frame(C.SMFIC_QUIT);
const QUIT_NC = frame(C.SMFIC_QUIT_NC);
const cmds = (...frames: Buffer[]): MilterCommand[] => decode(Buffer.concat(frames));
const OPEN = [optneg(), connect("client.example.net", "4", "192.0.2.1"), helo()];

describe("milter session: greylisting behaviour", () => {
  it("defers the null sender at DATA, not at RCPT", () => {
    const run = drive(cmds(...OPEN, mail(""), rcpt("a@example.com"), DATA), (r) =>
      r.stage === "rcpt" ? accept() : defer(),
    );
    assert.deepEqual(run.replies, [OPTNEG, CONT, CONT, Y451]);
    assert.deepEqual(
      run.checks.map((c) => `${c.stage} ${c.sender}->${c.recipient}`),
      ["rcpt ->a@example.com", "data ->a@example.com"],
    );
    // The deferred message is over: the MTA aborts and may start another one.
    const next = drive(cmds(ABORT, mail("x@example.org"), rcpt("a@example.com")), () => accept(), run.state);
    assert.deepEqual(next.replies, [CONT, CONT]);
  });

  it("turns a fallback defer of the null sender at RCPT into CONTINUE, but keeps it at DATA", () => {
    // A failure-mode answer may defer anything; callouts (null sender, RCPT, QUIT) must still pass.
    const run = drive(cmds(...OPEN, mail(""), rcpt("a@example.com"), DATA), () =>
      defer("Greylisting service temporarily unavailable", 451, "4.3.0"),
    );
    assert.deepEqual(run.replies, [
      OPTNEG,
      CONT,
      CONT,
      "replycode 451 4.3.0 Greylisting service temporarily unavailable\0",
    ]);
  });

  it("accepts the null sender at DATA when its check passes, then adds one X-Greylist", () => {
    const run = drive(cmds(...OPEN, mail(""), rcpt("a@example.com"), rcpt("b@example.com"), DATA, EOM), (r) =>
      r.stage === "rcpt" ? accept() : accept("passed"),
    );
    assert.deepEqual(run.replies, [OPTNEG, CONT, CONT, CONT, CONT, "addheader X-Greylist: passed", CONT]);
  });

  it("decides a null-sender message once: for its one recipient, or as a whole for several", () => {
    // One check for the message: a check per recipient would use up the first recipients'
    // single-use passes on a message a later one defers (a bounce to N recipients: 2^N attempts).
    const dataChecks = (...recipients: string[]) =>
      drive(cmds(...OPEN, mail(""), ...recipients.map((r) => rcpt(r)), DATA), (r) =>
        r.stage === "rcpt" ? accept() : defer(),
      )
        .checks.filter((c) => c.stage === "data")
        .map((c) => c.recipient);
    assert.deepEqual(dataChecks("a@x.test"), ["a@x.test"]);
    assert.deepEqual(dataChecks("a@x.test", "a@x.test"), ["a@x.test"], "one distinct recipient");
    assert.deepEqual(
      dataChecks("a@x.test", "b@x.test", "c@x.test"),
      [""],
      "the whole message, as Postfix's policy client asks",
    );
    const rejected = drive(cmds(...OPEN, mail(""), rcpt("a@x.test"), rcpt("b@x.test"), DATA), (r) =>
      r.stage === "rcpt" ? accept() : reject(),
    );
    assert.equal(rejected.replies.at(-1), "replycode 554 5.7.1 Blocked\0");
  });

  it("decides the null sender at end of message when the MTA has no DATA step (version 3)", () => {
    const run = drive(
      cmds(optneg(3, 0x3f, 0x17f), connect("h", "4", "192.0.2.1"), helo(), mail(""), rcpt("a@x.test"), EOM),
      (r) => (r.stage === "rcpt" ? accept() : defer()),
    );
    assert.deepEqual(run.replies, ["optneg v3 a=0x1 p=0x170", CONT, CONT, CONT, CONT, Y451]);
    assert.deepEqual(
      run.checks.map((c) => c.stage),
      ["rcpt", "data"],
    );
  });

  it("never defers an authenticated sender, and marks its checks", () => {
    const run = drive(
      cmds(
        ...OPEN,
        macro("M", { "{auth_authen}": "alice", i: "Q1" }),
        mail("alice@example.org"),
        rcpt("x@y.test"),
        DATA,
      ),
      () => defer(),
    );
    assert.deepEqual(run.replies, [OPTNEG, CONT, CONT, CONT]);
    assert.equal(run.checks[0]?.saslUsername, "alice");
    assert.equal(run.checks[0]?.authenticated, true);
    assert.equal(run.checks[0]?.queueId, "Q1");
    const rejected = drive(cmds(...OPEN, macro("M", { auth_authen: "bob" }), mail("b@x.test"), rcpt("y@z.test")), () =>
      reject(),
    );
    assert.deepEqual(rejected.replies, [OPTNEG, CONT, "replycode 554 5.7.1 Blocked\0"]);
  });

  const clients: [name: string, connectFrame: Buffer, address: string, local: boolean][] = [
    ["IPv4", connect("[192.0.2.1]", "4", "192.0.2.1"), "192.0.2.1", false],
    ["IPv6 as Postfix sends it", connect("[::1]", "6", "2001:db8::1"), "2001:db8::1", false],
    ["IPv6 with sendmail's prefix", connect("h", "6", "IPv6:2001:db8::1"), "2001:db8::1", false],
    ["a unix socket", connect("localhost", "L", "/run/postfix/smtp"), "", true],
    ["an unknown family", connect("localhost", "U"), "", true],
  ];
  for (const [name, connectFrame, address, local] of clients) {
    it(`takes the client from the CONNECT packet: ${name}`, () => {
      const run = drive(cmds(optneg(), connectFrame, mail("a@b.test"), rcpt("grey@c.test")), () => defer());
      assert.equal(run.checks[0]?.clientAddress, address);
      assert.equal(run.checks[0]?.localClient, local);
      assert.equal(run.replies.at(-1), local ? CONT : Y451, "a local client is never deferred");
    });
  }

  it("maps decisions to replies, falling back to the MTA's defaults for unusable ones", () => {
    const rows: [Decision, string][] = [
      [defer("Greylisted 5% of the time", 450, "4.2.0"), "replycode 450 4.2.0 Greylisted 5%% of the time\0"],
      [defer("x", 550, "5.7.1"), "tempfail"],
      [defer("line1\r\nline2"), "tempfail"],
      [reject("Go away", 550, "5.7.1"), "replycode 550 5.7.1 Go away\0"],
      [reject("x", 451, "4.7.1"), "reject"],
      [accept("ignored at RCPT"), CONT],
    ];
    for (const [decision, expected] of rows) {
      const run = drive(cmds(...OPEN, mail("a@b.test"), rcpt("c@d.test")), () => decision);
      assert.equal(run.replies.at(-1), expected, JSON.stringify(decision));
    }
  });

  it("keeps only the first X-Greylist value, and only within its message", () => {
    const headers: Record<string, string> = { "a@x.test": "", "b@x.test": "first", "c@x.test": "second" };
    const run = drive(
      cmds(...OPEN, mail("s@x.test"), rcpt("a@x.test"), rcpt("b@x.test"), rcpt("c@x.test"), DATA, EOM, ABORT),
      (r) => accept(headers[r.recipient]),
    );
    assert.deepEqual(run.replies.slice(-2), ["addheader X-Greylist: first", CONT]);
    const second = drive(cmds(mail("s@x.test"), rcpt("d@x.test"), DATA, EOM), () => accept(), run.state);
    assert.deepEqual(second.replies, [CONT, CONT, CONT, CONT]);
  });

  it("adds no header when the MTA did not grant SMFIF_ADDHDRS", () => {
    const run = drive(
      cmds(optneg(6, 0, 0x1fffff), connect("h", "4", "192.0.2.1"), mail("a@b.test"), rcpt("c@d.test"), EOM),
      () => accept("v"),
    );
    assert.deepEqual(run.replies, ["optneg v6 a=0x0 p=0x3170", CONT, CONT, CONT]);
  });
});

describe("milter session: protocol lifecycle", () => {
  it("answers CONNECT and HELO when the MTA offers no NR_CONN/NR_HELO (version 2)", () => {
    const run = drive(cmds(optneg(2, 0x3f, 0x7f), connect("h", "4", "192.0.2.1"), helo(), mail("a@b.test")), () =>
      accept(),
    );
    assert.deepEqual(run.replies, ["optneg v2 a=0x1 p=0x70", CONT, CONT, CONT]);
    const heloOnly = drive(
      cmds(optneg(6, 0x1ff, 0x1fffff & ~C.SMFIP_NR_CONN), connect("h", "4", "1.2.3.4"), helo()),
      () => accept(),
    );
    assert.deepEqual(heloOnly.replies, ["optneg v6 a=0x101 p=0x2170", CONT]);
  });

  it("handles two messages, RSET (ABORT), extra ABORTs and QUIT on one connection", () => {
    const run = drive(
      cmds(
        ...OPEN,
        mail("a@x.test"),
        rcpt("grey@y.test"),
        ABORT,
        mail("b@x.test"),
        rcpt("ok@y.test"),
        DATA,
        EOM,
      ).concat(cmds(ABORT, mail("c@x.test"), rcpt("ok2@y.test"), ABORT, ABORT, ABORT, QUIT)),
      harness(),
    );
    assert.deepEqual(run.replies, [OPTNEG, CONT, Y451, CONT, CONT, CONT, CONT, CONT, CONT]);
    assert.deepEqual(
      run.checks.map((c) => `${c.sender}->${c.recipient}`),
      ["a@x.test->grey@y.test", "b@x.test->ok@y.test", "c@x.test->ok2@y.test"],
    );
    assert.equal(run.state.phase, "closed");
    assert.deepEqual(run.closes, [{ kind: "close", reason: "quit" }]);
  });

  it("takes sendmail's order: MAIL right after end of message, QUIT without ABORT", () => {
    const run = drive(
      cmds(...OPEN, mail("a@x.test"), rcpt("ok@y.test"), EOM, mail("b@x.test"), rcpt("ok@y.test"), EOM, QUIT),
      () => accept(),
    );
    assert.deepEqual(run.replies, [OPTNEG, CONT, CONT, CONT, CONT, CONT, CONT]);
    assert.deepEqual(run.closes, [{ kind: "close", reason: "quit" }]);
  });

  it("takes macros of any stage, empty ones included; keeps the stages it reads, each replacing its last", () => {
    const run = drive(
      cmds(optneg(), macro("C", { "{client_name}": "mx.example.net" }), connect("[192.0.2.1]", "4", "192.0.2.1"))
        .concat(cmds(macro("H"), helo(), macro("U"), frame(C.SMFIC_UNKNOWN, "XYZZY\0"), macro("X", { a: "b" })))
        .concat(
          cmds(macro("M", { i: "OLD" }), macro("M"), mail("a@x.test"), macro("R", { "{i}": "Q2" }), rcpt("r@y.test")),
        )
        .concat(cmds(macro("R"), rcpt("s@y.test"), macro("L", { i: "Q2" }), frame(C.SMFIC_HEADER, "Subject\0hi\0")))
        .concat(cmds(macro("N"), frame(C.SMFIC_EOH), macro("B"), frame(C.SMFIC_BODY, "x\r\n"), macro("E"), EOM, ABORT))
        .concat(cmds(mail("b@x.test"), rcpt("t@y.test"))),
      () => accept(),
    );
    assert.deepEqual(
      run.checks.map((c) => [c.clientName, c.queueId]),
      [
        ["mx.example.net", "Q2"],
        ["mx.example.net", ""],
        ["mx.example.net", ""],
      ],
    );
    // UNKNOWN, HEADER, EOH and BODY arrive although we asked to skip them: CONTINUE, not an error.
    assert.deepEqual(run.replies, [OPTNEG, CONT, CONT, CONT, CONT, CONT, CONT, CONT, CONT, CONT, CONT]);
    // Macros of stages never read (U, X, L, N, B here) are not kept: a peer cannot pile up tables.
    const unread = drive(
      cmds(macro("X", { a: "b" }), macro("Z", { c: "d" }), macro("R", { i: "Q3" })),
      () => accept(),
      run.state,
    );
    assert.ok("conn" in unread.state);
    assert.deepEqual([...unread.state.conn.macros.keys()].sort(), ["C", "H", "R"]);
  });

  it("starts over after QUIT_NC, keeping the negotiation and forgetting the macros", () => {
    const run = drive(
      cmds(
        optneg(),
        macro("C", { "{client_name}": "old.example" }),
        connect("h", "4", "192.0.2.1"),
        mail("a@x.test"),
      ).concat(cmds(QUIT_NC, connect("[198.51.100.7]", "4", "198.51.100.7"), mail("b@x.test"), rcpt("c@y.test"))),
      () => accept(),
    );
    assert.equal(run.checks[0]?.clientAddress, "198.51.100.7");
    assert.equal(run.checks[0]?.clientName, "unknown");
    assert.deepEqual(run.replies, [OPTNEG, CONT, CONT, CONT]);
  });

  const errors: [name: string, frames: Buffer[], code: string][] = [
    ["CONNECT before OPTNEG", [connect("h", "4", "1.2.3.4")], "out_of_order"],
    ["MACRO before OPTNEG", [macro("C")], "out_of_order"],
    ["ABORT before OPTNEG", [ABORT], "out_of_order"],
    ["QUIT before OPTNEG", [QUIT], "out_of_order"],
    ["a second OPTNEG", [optneg(), optneg()], "out_of_order"],
    ["version 1", [optneg(1, 0xf, 0x3f)], "unsupported_version"],
    ["a second CONNECT", [...OPEN, connect("h", "4", "1.2.3.4")], "out_of_order"],
    ["RCPT before MAIL", [...OPEN, rcpt("a@b.test")], "out_of_order"],
    ["DATA before MAIL", [...OPEN, DATA], "out_of_order"],
    ["end of message outside a message", [...OPEN, EOM], "out_of_order"],
    ["HELO before CONNECT", [optneg(), helo()], "out_of_order"],
  ];
  for (const [name, frames, code] of errors) {
    it(`closes on ${name}`, () => {
      const run = drive(cmds(...frames), () => accept());
      assert.equal(run.state.phase, "closed");
      assert.equal(run.closes.length, 1);
      const close = run.closes[0];
      assert.ok(close?.kind === "close" && close.reason === "protocol_error");
      assert.equal(close.error?.code, code);
    });
  }

  it("refuses a command while a check is outstanding, and stray decisions", () => {
    const waiting = drive(cmds(...OPEN, mail("a@x.test"), rcpt("b@y.test")), () => undefined);
    assert.equal(waiting.state.phase, "awaiting_decision");
    const [rcptAgain] = cmds(rcpt("c@y.test"));
    assert.ok(rcptAgain);
    const during = transition(waiting.state, { kind: "command", command: rcptAgain });
    assert.equal(during.state.phase, "closed");
    assert.equal(during.effects.length, 1);
    const refused = during.effects[0];
    assert.ok(refused?.kind === "close" && refused.reason === "protocol_error");
    assert.equal(refused.error?.code, "check_outstanding");
    const wrongId = transition(waiting.state, { kind: "decision", checkId: 99, decision: accept() });
    assert.equal(wrongId.effects[0]?.kind === "close" && wrongId.effects[0].error?.code, "unexpected_decision");
    const idle = drive(cmds(optneg()), () => accept());
    const stray = transition(idle.state, { kind: "decision", checkId: 1, decision: accept() });
    assert.equal(stray.effects[0]?.kind === "close" && stray.effects[0].error?.code, "unexpected_decision");
    const closed = transition({ phase: "closed" }, { kind: "command", command: rcptAgain });
    assert.equal(closed.effects[0]?.kind === "close" && closed.effects[0].error?.code, "closed");
  });

  it("numbers checks per connection so answers can be matched", () => {
    const run = drive(cmds(...OPEN, mail("a@x.test"), rcpt("b@y.test")), () => undefined);
    assert.ok(run.state.phase === "awaiting_decision");
    assert.equal(run.state.pending.checkId, 1);
    const answered = transition(run.state, { kind: "decision", checkId: 1, decision: accept() });
    const [next] = cmds(rcpt("c@y.test"));
    assert.ok(next);
    const second = transition(answered.state, { kind: "command", command: next });
    assert.equal(second.effects[0]?.kind === "check" && second.effects[0].checkId, 2);
  });
});
