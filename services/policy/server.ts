/**
 * The Postfix SMTP access policy delegation server (postgrey's protocol). Postfix keeps one
 * connection for many requests and waits for each reply, so requests on a connection are
 * answered strictly in order. RCPT and DATA requests are decided; every other stage gets DUNNO.
 * A request over a limit or not in the protocol's form closes that connection only.
 */
import type { Socket } from "node:net";
import { Action, type CheckRequest, type CheckResponse, ProtocolState } from "../contract/gen/greyfleet/v1/greylist";
import type { Logger } from "../shared/logging";
import type { ShimDecisions } from "../shared/shim-decision";
import { type ConnectionHandler, listenShim, type ShimListener, writeReply } from "../shared/shim-listener";
import type { ShimMetrics } from "../shared/shim-metrics";
import { endShimSpan, startShimSpan } from "../shared/tracing";
import {
  encodeDeferIfPermit,
  encodeDunno,
  encodePrepend,
  encodeReject,
  encodeSmtpReply,
  PolicyDecoder,
  PolicyProtocolError,
  type PolicyRequest,
  toPolicyRequest,
} from "./codec";

/** How the policy shim is configured. */
export interface PolicyServerOptions {
  /** HOST:PORT or unix:/path. */
  readonly listen: string;
  readonly decisions: ShimDecisions;
  /** Sent as mta_id with every Check. */
  readonly mtaId: string;
  /** defer_if_permit: "DEFER_IF_PERMIT <text>"; smtp: "<code> <enhanced> <text>". */
  readonly deferReply: "defer_if_permit" | "smtp";
  readonly idleTimeoutMs: number;
  readonly metrics: ShimMetrics;
  readonly log: Logger;
}

const DUNNO = encodeDunno();

/**
 * Requests a connection may have waiting for their replies. Postfix sends one and waits; a peer
 * that sends more is not Postfix, and its connection is closed before it queues up work.
 */
export const MAX_PIPELINED_REQUESTS = 32;

/** The stages greylisting decides; the rest are answered DUNNO without asking. */
const STAGES: Readonly<Record<string, ProtocolState>> = {
  RCPT: ProtocolState.PROTOCOL_STATE_RCPT,
  DATA: ProtocolState.PROTOCOL_STATE_DATA,
};

/** The CheckRequest for a policy request at RCPT or DATA. */
export function toCheckRequest(request: PolicyRequest, stage: ProtocolState, mtaId: string): CheckRequest {
  return {
    clientAddress: request.client_address,
    clientName: request.client_name === "unknown" ? "" : request.client_name,
    heloName: request.helo_name,
    sender: request.sender,
    recipient: request.recipient,
    saslUsername: request.sasl_username,
    queueId: request.queue_id,
    instance: request.instance,
    protocolState: stage,
    mtaId,
  };
}

/**
 * The policy reply for a decision; the action word goes into the metrics. A text Postfix cannot
 * take (a line break, too long) is left out rather than the verdict: a defer stays a defer and a
 * reject a reject. The SMTP form is used only with a 4xx code, so a defer is never sent as a
 * permanent reply.
 */
export function toReply(response: CheckResponse, deferReply: "defer_if_permit" | "smtp"): [Buffer, string] {
  switch (response.action) {
    case Action.ACTION_DEFER:
      if (deferReply === "smtp" && response.smtpCode >= 400 && response.smtpCode < 500) {
        const smtp = encodedOrUndefined(() =>
          encodeSmtpReply(response.smtpCode, response.enhancedStatusCode, response.smtpText),
        );
        if (smtp) return [smtp, "defer"];
      }
      return [encodedOrUndefined(() => encodeDeferIfPermit(response.smtpText)) ?? encodeDeferIfPermit(""), "defer"];
    case Action.ACTION_REJECT:
      return [encodedOrUndefined(() => encodeReject(response.smtpText)) ?? encodeReject(""), "reject"];
    default:
      return response.xGreylistHeader
        ? [encodedOrUndefined(() => encodePrepend("X-Greylist", response.xGreylistHeader)) ?? DUNNO, "prepend"]
        : [DUNNO, "dunno"];
  }
}

/** The reply `encode` makes, or undefined if it cannot (RangeError: text Postfix cannot take). */
function encodedOrUndefined(encode: () => Buffer): Buffer | undefined {
  try {
    return encode();
  } catch (error) {
    if (error instanceof RangeError) return undefined;
    throw error;
  }
}

/** One Postfix connection: decodes requests, answers them in order. */
class PolicyConnection implements ConnectionHandler {
  private readonly decoder = new PolicyDecoder();
  private tail: Promise<void> = Promise.resolve();
  /** Requests decoded and not yet answered. */
  private waiting = 0;
  /** The message (Postfix's instance attribute) that last got an X-Greylist header. */
  private prependedInstance = "";

  constructor(
    private readonly socket: Socket,
    private readonly options: PolicyServerOptions,
  ) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    // The peer has sent all it will: answer what it asked, then close (a request cut short is
    // not answered).
    const end = (): void => void this.socket.end();
    socket.on("end", () => void this.tail.then(end, end));
    socket.on("error", () => socket.destroy()); // reset by peer: nothing to answer
  }

  idle(): Promise<void> {
    return this.tail;
  }

  private onData(chunk: Buffer): void {
    for (const result of this.decoder.push(chunk)) {
      if (result.kind === "error") {
        this.protocolError(result);
        return;
      }
      const request = toPolicyRequest(result.attributes);
      if (request instanceof PolicyProtocolError) {
        this.protocolError(request);
        return;
      }
      if (++this.waiting > MAX_PIPELINED_REQUESTS) {
        this.protocolError(
          new PolicyProtocolError(
            "too_many_pipelined",
            `more than ${MAX_PIPELINED_REQUESTS} requests awaiting replies`,
          ),
        );
        return;
      }
      this.tail = this.tail.then(() => this.answer(request)).finally(() => this.waiting--);
    }
  }

  private async answer(request: PolicyRequest): Promise<void> {
    const stageName = request.protocol_state.toUpperCase();
    const stage = STAGES[stageName];
    if (stage === undefined) {
      // Any other state is not greylisted; the label is bounded whatever the peer sent.
      this.options.metrics.answered("other", "dunno");
      this.write(DUNNO);
      return;
    }
    const span = startShimSpan("policy", stage === ProtocolState.PROTOCOL_STATE_DATA ? "data" : "rcpt");
    const response = await this.options.decisions.decide(toCheckRequest(request, stage, this.options.mtaId), span);
    let [reply, action] = toReply(response, this.options.deferReply);
    if (action === "prepend") {
      // One X-Greylist header per message: Postfix asks once per recipient of the same instance.
      if (request.instance !== "" && request.instance === this.prependedInstance) [reply, action] = [DUNNO, "dunno"];
      else this.prependedInstance = request.instance;
    }
    this.options.metrics.answered(stageName.toLowerCase(), action);
    endShimSpan(span, action);
    this.write(reply);
  }

  private write(reply: Buffer): void {
    writeReply(this.socket, reply);
  }

  private protocolError(error: PolicyProtocolError): void {
    this.options.metrics.protocolError(error.code);
    this.options.log.warn("policy protocol error: closing the connection", {
      code: error.code,
      error: error.message,
      peer: this.socket.remoteAddress ?? "unix",
    });
    this.socket.destroy();
  }
}

/** Starts the policy server. */
export function startPolicyServer(options: PolicyServerOptions): Promise<ShimListener> {
  return listenShim({
    listen: options.listen,
    idleTimeoutMs: options.idleTimeoutMs,
    metrics: options.metrics,
    handle: (socket) => new PolicyConnection(socket, options),
    onError: (error) => options.log.warn("accepting a connection failed", { error: error.message }),
  });
}
