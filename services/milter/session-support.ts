/**
 * Types and pure helpers of the milter session: the check request and decision shapes, macro
 * lookup, and mapping a decision to reply bytes. Local types on purpose: the milter knows nothing
 * of gRPC; the server translates to and from the contract.
 */
import { encodeAddHeader, encodeReject, encodeReplyCode, encodeTempfail } from "./encode";

/** What the decision service says about one recipient. */
export type DecisionAction = "accept" | "defer" | "reject";

/** A decision, reduced to what the milter needs. */
export interface Decision {
  readonly action: DecisionAction;
  /** 4xx for defer, 5xx for reject (e.g. 451); ignored for accept. */
  readonly smtpCode: number;
  /** RFC 3463 code of the same class (e.g. "4.7.1"), or "". */
  readonly enhancedStatusCode: string;
  /** Reply text without the codes. */
  readonly smtpText: string;
  /** Value of the X-Greylist header for a message that passed after a delay, or "". */
  readonly xGreylistHeader: string;
}

/** SMTP stage of a check: RCPT normally, DATA for the null sender. */
export type CheckStage = "rcpt" | "data";

/** One question for the decision service (the server adds its MTA id and a deadline). */
export interface CheckFields {
  readonly stage: CheckStage;
  /** IP text without any "IPv6:" label; "" for a local client (see localClient). */
  readonly clientAddress: string;
  /** Verified reverse name, or "unknown". */
  readonly clientName: string;
  /** HELO/EHLO argument, "" if the client sent none. */
  readonly heloName: string;
  /** Envelope sender without angle brackets; "" for the null sender. */
  readonly sender: string;
  /** Envelope recipient without angle brackets. */
  readonly recipient: string;
  /** {auth_authen} from the MAIL macros; non-empty means outgoing mail. */
  readonly saslUsername: string;
  /** {i} if the MTA has sent it yet, else ""; for logs only. */
  readonly queueId: string;
  /** CONNECT family "L" (unix socket) or "U": a local submission the server never greylists. */
  readonly localClient: boolean;
  /** SASL-authenticated sender: outgoing mail, never deferred. */
  readonly authenticated: boolean;
}

/** Macros per stage letter, name -> value as sent ("{auth_authen}" or "i"). */
export type MacroTable = ReadonlyMap<string, ReadonlyMap<string, string>>;

/** Distinct recipients, in the order the MTA sent them. */
export type Recipients = readonly string[];

/** One SMTP transaction, from MAIL to end of message or ABORT. */
export interface Message {
  /** Without angle brackets; "" for the null sender. */
  readonly sender: string;
  readonly saslUsername: string;
  /** Recipients we answered CONTINUE at RCPT. */
  readonly accepted: Recipients;
  /** First non-empty X-Greylist value of an accepted recipient, or "". */
  readonly xGreylist: string;
  /** The null sender's per-recipient checks have run (at DATA), so end of message needs none. */
  readonly dataChecked: boolean;
}

/** The first value of macro `name` in the given stages, as "name" or "{name}"; "" if unset. */
export function macroValue(table: MacroTable, stages: readonly string[], name: string): string {
  for (const stage of stages) {
    const macros = table.get(stage);
    const value = macros?.get(name) ?? macros?.get(`{${name}}`);
    if (value !== undefined) return value;
  }
  return "";
}

/** The table with only the given stages kept. */
export function keepStages(table: MacroTable, stages: readonly string[]): MacroTable {
  return new Map([...table].filter(([stage]) => stages.includes(stage)));
}

/** "IPv6:2001:db8::1" (sendmail's CONNECT, Postfix's {client_addr}) -> "2001:db8::1". */
export function stripIpv6Label(address: string): string {
  return /^ipv6:/i.test(address) ? address.slice(5) : address;
}

/**
 * The decision as applied to the check it answers. Never deferred, even by a synthetic
 * failure-mode defer from the server: outgoing mail (authenticated or local), so local users can
 * always send; and the null sender at RCPT, which is decided at DATA so that sender-verification
 * callouts (null sender, RCPT, QUIT) work while the decision service is down. Rejects stand.
 */
export function resolve(
  decision: Decision,
  check: Pick<CheckFields, "stage" | "sender" | "authenticated" | "localClient">,
): Decision {
  const exempt = check.authenticated || check.localClient || (check.stage === "rcpt" && check.sender === "");
  return exempt && decision.action === "defer" ? { ...decision, action: "accept" } : decision;
}

/**
 * REPLYCODE bytes for a defer or reject. Like libmilter, a code of the wrong class (a defer with
 * 5xx) or an unencodable text falls back to the MTA's default tempfail / reject reply.
 */
export function replyFor(decision: Decision): Buffer {
  const reject = decision.action === "reject";
  const classOk = reject ? decision.smtpCode >= 500 : decision.smtpCode < 500;
  if (classOk) {
    const encoded = encodeReplyCode(decision.smtpCode, decision.enhancedStatusCode, decision.smtpText);
    if (encoded.ok) return encoded.value;
  }
  return reject ? encodeReject() : encodeTempfail();
}

/** The ADDHEADER packet for a non-empty X-Greylist value; none if empty or unencodable. */
export function xGreylistReply(value: string): Buffer[] {
  if (value === "") return [];
  const encoded = encodeAddHeader("X-Greylist", value);
  return encoded.ok ? [encoded.value] : [];
}
