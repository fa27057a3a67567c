/**
 * The per-connection milter state machine; pure. One decoded command (or one decision the server
 * obtained for a "check" effect) goes in; the next state and the effects to perform come out.
 * Which command may arrive in which phase is one table (ORDER), checked before dispatch.
 */
import type { ConnectFamily, MilterCommand, MilterCommandKind, MilterError, MilterErrorCode } from "./codec";
import { encodeContinue } from "./encode";
import { type Negotiated, negotiate } from "./negotiate";
import {
  type CheckFields,
  type Decision,
  keepStages,
  type MacroTable,
  type Message,
  macroValue,
  replyFor,
  resolve,
  stripIpv6Label,
  xGreylistReply,
} from "./session-support";

export type { CheckFields, CheckStage, Decision, DecisionAction } from "./session-support";

/** What the server feeds in: a decoded command, or the answer to the outstanding "check". */
export type SessionInput =
  | { readonly kind: "command"; readonly command: MilterCommand }
  | { readonly kind: "decision"; readonly checkId: number; readonly decision: Decision };

/** What the server must do, in order. */
export type SessionEffect =
  /** Write these bytes with one write (they may hold several packets). */
  | { readonly kind: "reply"; readonly bytes: Buffer }
  /** Ask the decision service about one recipient, then feed the answer back with this checkId. */
  | { readonly kind: "check"; readonly checkId: number; readonly request: CheckFields }
  /** Close the connection: the MTA said QUIT, or the stream can no longer be trusted. */
  | { readonly kind: "close"; readonly reason: "quit" | "protocol_error"; readonly error?: MilterError };

/** Connection-wide facts kept across messages. */
export interface Connection {
  readonly negotiated: Negotiated;
  /** Macros per stage letter ("C", "H", "M", ...); a new MACRO for a stage replaces that stage. */
  readonly macros: MacroTable;
  /** Id for the next "check" effect; starts at 1. */
  readonly nextCheckId: number;
}

/** The SMTP client as the CONNECT packet (and its macros) describe it. */
export interface ClientInfo {
  /** IP text without "IPv6:"; "" for a local client. */
  readonly address: string;
  /** Verified reverse name, or "unknown". */
  readonly name: string;
  readonly family: ConnectFamily;
  /** Unix socket ("L") or unknown family ("U"): local submission, never greylisted. */
  readonly local: boolean;
}

/**
 * A check in flight: at RCPT for one recipient, or for the null sender's whole message ("eom" when
 * the MTA has no DATA step, version < 4, or DATA could not be answered).
 */
export type PendingCheck = {
  readonly checkId: number;
  readonly step: "rcpt" | "data" | "eom";
  readonly recipient: string;
};

/** The stages whose macros the session reads: connect, HELO, MAIL, RCPT, DATA, end of message. */
const MACRO_STAGES_READ = new Set(["C", "H", "M", "R", "T", "E"]);

/** Every phase of a connection, each with exactly the facts known in it. */
export type SessionState =
  | { readonly phase: "negotiating" }
  | { readonly phase: "idle"; readonly conn: Connection }
  | { readonly phase: "connected"; readonly conn: Connection; readonly client: ClientInfo; readonly helo: string }
  | {
      readonly phase: "message";
      readonly conn: Connection;
      readonly client: ClientInfo;
      readonly helo: string;
      readonly message: Message;
    }
  | {
      readonly phase: "awaiting_decision";
      readonly conn: Connection;
      readonly client: ClientInfo;
      readonly helo: string;
      readonly message: Message;
      readonly pending: PendingCheck;
    }
  | { readonly phase: "closed" };

/** A phase name. */
export type Phase = SessionState["phase"];

/** The outcome of one input. */
export interface Transition {
  readonly state: SessionState;
  readonly effects: readonly SessionEffect[];
}

/** A new connection: OPTNEG must come first. */
export function initialSession(): SessionState {
  return { phase: "negotiating" };
}

// Where each command may arrive. MAIL and HELO inside a message abort it implicitly (sendmail
// sends MAIL right after end of message without ABORT; libmilter does the same). Nothing is
// accepted while a decision is outstanding: the MTA waits for our reply before its next command.
const ORDER = {
  optneg: ["negotiating"],
  macro: ["idle", "connected", "message"],
  connect: ["idle"],
  helo: ["connected", "message"],
  mail: ["connected", "message"],
  rcpt: ["message"],
  data: ["message"],
  header: ["message"],
  eoh: ["message"],
  body: ["message"],
  bodyeob: ["message"],
  unknown: ["idle", "connected", "message"],
  abort: ["idle", "connected", "message"],
  quit: ["idle", "connected", "message"],
  quit_nc: ["idle", "connected", "message"],
} as const satisfies { readonly [K in MilterCommandKind]: readonly Phase[] };

type Allowed<K extends MilterCommandKind> = Extract<SessionState, { phase: (typeof ORDER)[K][number] }>;
type CommandOf<K extends MilterCommandKind> = Extract<MilterCommand, { kind: K }>;
type Handler<K extends MilterCommandKind> = (state: Allowed<K>, command: CommandOf<K>) => Transition;
type MessageState = Extract<SessionState, { phase: "message" }>;
type AwaitingState = Extract<SessionState, { phase: "awaiting_decision" }>;

/** The single transition function: ordering is checked here, then the input is dispatched. */
export function transition(state: SessionState, input: SessionInput): Transition {
  if (input.kind === "decision") {
    if (state.phase !== "awaiting_decision" || state.pending.checkId !== input.checkId) {
      return protocolError("unexpected_decision", `decision ${input.checkId} not awaited in phase ${state.phase}`);
    }
    return onDecision(state, input.decision);
  }
  return dispatch(state, input.command.kind, input.command);
}

function dispatch<K extends MilterCommandKind>(state: SessionState, kind: K, command: CommandOf<K>): Transition {
  if (!isAllowed(state, kind)) return refuse(state, kind);
  const handler: Handler<K> = HANDLERS[kind];
  return handler(state, command);
}

function isAllowed<K extends MilterCommandKind>(state: SessionState, kind: K): state is Allowed<K> {
  const phases: readonly Phase[] = ORDER[kind];
  return phases.includes(state.phase);
}

function refuse(state: SessionState, kind: MilterCommandKind): Transition {
  switch (state.phase) {
    case "negotiating":
      return protocolError("out_of_order", `${kind} before OPTNEG`);
    case "awaiting_decision":
      return protocolError("check_outstanding", `${kind} while a decision is outstanding`);
    case "closed":
      return protocolError("closed", `${kind} after close`);
    default:
      return protocolError("out_of_order", `${kind} in phase ${state.phase}`);
  }
}

const HANDLERS: { readonly [K in MilterCommandKind]: Handler<K> } = {
  optneg: (_state, command) => {
    const result = negotiate(command);
    if (!result.ok) return protocolError(result.error.code, result.error.message);
    const conn: Connection = { negotiated: result.value, macros: new Map(), nextCheckId: 1 };
    return { state: { phase: "idle", conn }, effects: [reply(result.value.reply)] };
  },
  macro: (state, command) => {
    // Only the stages read here are kept: a peer sending macros for every byte value would
    // otherwise hold up to 256 tables of a frame each per connection.
    if (!MACRO_STAGES_READ.has(command.stage)) return { state, effects: [] };
    const macros = new Map(state.conn.macros).set(command.stage, command.macros);
    return { state: { ...state, conn: { ...state.conn, macros } }, effects: [] };
  },
  connect: (state, command) => {
    const local = command.family === "L" || command.family === "U";
    // The packet is the source: with Postfix defaults {client_addr} is not a macro at all.
    const fromPacket = command.address || macroValue(state.conn.macros, ["C"], "client_addr");
    const address = local ? "" : stripIpv6Label(fromPacket);
    const macroName = macroValue(state.conn.macros, ["C"], "client_name");
    // Postfix and sendmail send "[addr]" when the name is not verified.
    const bracketed = command.hostname.startsWith("[") && command.hostname.endsWith("]");
    const name = macroName || (bracketed || command.hostname === "" ? "unknown" : command.hostname);
    const client: ClientInfo = { address, name, family: command.family, local };
    const conn = state.conn;
    return {
      state: { phase: "connected", conn, client, helo: "" },
      effects: maybeContinue(conn.negotiated.noReply.connect),
    };
  },
  helo: (state, command) => {
    const conn = { ...state.conn, macros: keepStages(state.conn.macros, ["C", "H"]) };
    const next: SessionState = { phase: "connected", conn, client: state.client, helo: command.helo };
    return { state: next, effects: maybeContinue(conn.negotiated.noReply.helo) };
  },
  mail: (state, command) => {
    const conn = { ...state.conn, macros: keepStages(state.conn.macros, ["C", "H", "M"]) };
    const message: Message = {
      sender: command.address,
      saslUsername: macroValue(conn.macros, ["M"], "auth_authen"),
      accepted: [],
      xGreylist: "",
      dataChecked: false,
    };
    const next: SessionState = { phase: "message", conn, client: state.client, helo: state.helo, message };
    return { state: next, effects: maybeContinue(conn.negotiated.noReply.mail) };
  },
  // Never NR_RCPT (negotiate does not ask for it): the reply to RCPT carries the decision.
  rcpt: (state, command) => startCheck(state, { step: "rcpt", recipient: command.address }),
  data: (state) => {
    const { message, conn } = state;
    if (message.sender !== "") return { state, effects: maybeContinue(conn.negotiated.noReply.data) };
    // Without a reply to DATA the null sender can only be decided at end of message.
    if (conn.negotiated.noReply.data) return { state, effects: [] };
    return startNullSenderCheck(state, "data");
  },
  header: (state) => ({ state, effects: maybeContinue(state.conn.negotiated.noReply.header) }),
  eoh: (state) => ({ state, effects: maybeContinue(state.conn.negotiated.noReply.eoh) }),
  body: (state) => ({ state, effects: maybeContinue(state.conn.negotiated.noReply.body) }),
  bodyeob: (state) => {
    const { message } = state;
    if (message.sender === "" && !message.dataChecked) return startNullSenderCheck(state, "eom");
    return endOfMessage(state);
  },
  unknown: (state) => ({ state, effects: maybeContinue(state.conn.negotiated.noReply.unknown) }),
  abort: (state) => {
    if (state.phase === "idle") return { state, effects: [] };
    return { state: endMessage(state), effects: [] };
  },
  quit: () => ({ state: { phase: "closed" }, effects: [{ kind: "close", reason: "quit" }] }),
  quit_nc: (state) => {
    // A new SMTP connection follows on this socket: keep the negotiation, forget everything else.
    const conn: Connection = {
      negotiated: state.conn.negotiated,
      macros: new Map(),
      nextCheckId: state.conn.nextCheckId,
    };
    return { state: { phase: "idle", conn }, effects: [] };
  },
};

function onDecision(state: AwaitingState, decision: Decision): Transition {
  const { pending, message } = state;
  const base: MessageState = { phase: "message", conn: state.conn, client: state.client, helo: state.helo, message };
  const outcome = resolve(decision, {
    stage: pending.step === "rcpt" ? "rcpt" : "data",
    sender: message.sender,
    authenticated: message.saslUsername !== "",
    localClient: state.client.local,
  });
  const xGreylist = message.xGreylist || (outcome.action === "accept" ? outcome.xGreylistHeader : "");
  if (pending.step === "rcpt") {
    if (outcome.action !== "accept") return { state: base, effects: [reply(replyFor(outcome))] };
    const accepted = [...message.accepted, pending.recipient];
    return { state: { ...base, message: { ...message, accepted, xGreylist } }, effects: [reply(encodeContinue())] };
  }
  const next: MessageState = { ...base, message: { ...message, xGreylist } };
  // The null sender's one check (see startNullSenderCheck) decides the whole message.
  if (outcome.action !== "accept") return { state: endMessage(next), effects: [reply(replyFor(outcome))] };
  if (pending.step === "eom") return endOfMessage(next);
  return { state: next, effects: [reply(encodeContinue())] };
}

/**
 * The null sender's message is decided once: for its one recipient, or with several for the
 * message as a whole (recipient "", as Postfix's policy client asks at DATA then, so both shims
 * key it alike). A check per recipient would not do: a single-use pass is used up when asked, so
 * the first recipients' passes would be spent on a message a later recipient defers, and a bounce
 * to N recipients would need 2^N attempts. With no recipient there is nothing to decide.
 */
function startNullSenderCheck(state: MessageState, step: "data" | "eom"): Transition {
  const recipients = [...new Set(state.message.accepted)];
  const checked: MessageState = { ...state, message: { ...state.message, dataChecked: true } };
  if (recipients.length === 0) {
    return step === "eom" ? endOfMessage(checked) : { state: checked, effects: [reply(encodeContinue())] };
  }
  return startCheck(checked, { step, recipient: recipients.length === 1 ? (recipients[0] as string) : "" });
}

function startCheck(state: MessageState, pending: Omit<PendingCheck, "checkId">): Transition {
  const { conn, client, message } = state;
  const checkId = conn.nextCheckId;
  // {i} is late under Postfix (after the first accepted RCPT) and early under sendmail (at MAIL).
  const queueStages = pending.step === "rcpt" ? ["R", "M"] : ["E", "T", "R", "M"];
  const request: CheckFields = {
    stage: pending.step === "rcpt" ? "rcpt" : "data",
    clientAddress: client.address,
    clientName: client.name,
    heloName: state.helo,
    sender: message.sender,
    recipient: pending.recipient,
    saslUsername: message.saslUsername,
    queueId: macroValue(conn.macros, queueStages, "i"),
    localClient: client.local,
    authenticated: message.saslUsername !== "",
  };
  const next: AwaitingState = {
    ...state,
    phase: "awaiting_decision",
    conn: { ...conn, nextCheckId: checkId + 1 },
    pending: { ...pending, checkId },
  };
  return { state: next, effects: [{ kind: "check", checkId, request }] };
}

// End of message: X-Greylist (if any) and CONTINUE in one buffer, so the server writes them with
// one write (two small writes would meet Nagle's algorithm and the MTA's delayed ACK).
function endOfMessage(state: MessageState): Transition {
  const { message, conn } = state;
  const header = conn.negotiated.canAddHeader ? xGreylistReply(message.xGreylist) : [];
  const bytes = Buffer.concat([...header, encodeContinue()]);
  return { state: endMessage(state), effects: [reply(bytes)] };
}

// Back to "connected": the transaction is over; connection facts and CONNECT/HELO macros stay.
function endMessage(state: Extract<SessionState, { phase: "connected" | "message" }>): SessionState {
  const conn = { ...state.conn, macros: keepStages(state.conn.macros, ["C", "H"]) };
  return { phase: "connected", conn, client: state.client, helo: state.helo };
}

function maybeContinue(noReply: boolean): SessionEffect[] {
  return noReply ? [] : [reply(encodeContinue())];
}

function reply(bytes: Buffer): SessionEffect {
  return { kind: "reply", bytes };
}

function protocolError(code: MilterErrorCode, message: string): Transition {
  return {
    state: { phase: "closed" },
    effects: [{ kind: "close", reason: "protocol_error", error: { code, message } }],
  };
}
