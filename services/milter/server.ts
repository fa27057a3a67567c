/**
 * The milter server: one connection per SMTP session (Postfix and sendmail never reuse one).
 * Bytes go through the pure decoder and the pure session state machine; this file only performs
 * the effects: writes (each batch of replies in one write, with TCP_NODELAY, so no reply waits
 * for a delayed ACK), decisions (one at a time: the MTA waits for each reply), and
 * closing. A protocol error closes that connection only.
 */
import type { Socket } from "node:net";
import { Action, type CheckResponse, ProtocolState } from "../contract/gen/greyfleet/v1/greylist";
import type { Logger } from "../shared/logging";
import type { ShimDecisions } from "../shared/shim-decision";
import { type ConnectionHandler, listenShim, type ShimListener, writeReply } from "../shared/shim-listener";
import type { ShimMetrics } from "../shared/shim-metrics";
import { endShimSpan, type Span, startShimSpan } from "../shared/tracing";
import { type MilterCommand, MilterDecoder, type MilterError } from "./codec";
import {
  type CheckFields,
  type Decision,
  initialSession,
  type SessionInput,
  type SessionState,
  transition,
} from "./session";
import { resolve } from "./session-support";

/** How the milter shim is configured. */
export interface MilterServerOptions {
  /** HOST:PORT or unix:/path. */
  readonly listen: string;
  readonly decisions: ShimDecisions;
  /** Sent as mta_id with every Check. */
  readonly mtaId: string;
  readonly idleTimeoutMs: number;
  readonly metrics: ShimMetrics;
  readonly log: Logger;
}

/** A local client (unix socket or unknown family) is never greylisted. */
const LOCAL_ACCEPT: Decision = {
  action: "accept",
  smtpCode: 0,
  enhancedStatusCode: "",
  smtpText: "",
  xGreylistHeader: "",
};

/** The session's view of a decision. */
export function toDecision(response: CheckResponse): Decision {
  const action =
    response.action === Action.ACTION_DEFER ? "defer" : response.action === Action.ACTION_REJECT ? "reject" : "accept";
  return {
    action,
    smtpCode: response.smtpCode,
    enhancedStatusCode: response.enhancedStatusCode,
    smtpText: response.smtpText,
    xGreylistHeader: response.xGreylistHeader,
  };
}

/**
 * Commands a connection may have waiting while a decision is outstanding. An MTA sends macros and
 * no-reply events ahead (a handful), then waits for the reply; hundreds mean a peer that is not
 * an MTA, and its connection is closed before it queues up work.
 */
export const MAX_QUEUED_COMMANDS = 256;

/** How long a connection may be quiet between DATA and the end of the message (or ABORT), ms. */
export const MESSAGE_TIMEOUT_MS = 60 * 60 * 1000;

/** One MTA connection. */
class MilterConnection implements ConnectionHandler {
  private readonly decoder = new MilterDecoder();
  private state: SessionState = initialSession();
  /** Commands decoded while a decision is outstanding, fed in order once it is in. */
  private readonly queued: MilterCommand[] = [];
  private deciding: Promise<void> | undefined;
  private out: Buffer[] = [];
  /** The MTA has ended its side of the connection (QUIT, or a half-close). */
  private peerEnded = false;
  /** Callers of idle() waiting for the message in progress to end. */
  private readonly idleWaiters: (() => void)[] = [];

  constructor(
    private readonly socket: Socket,
    private readonly options: MilterServerOptions,
  ) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("end", () => this.onEnd());
    socket.on("error", () => socket.destroy()); // reset by the MTA: nothing left to answer
    socket.on("close", () => this.wakeIdleWaiters());
  }

  /**
   * Settles once no message is in progress (between MAIL and its end of message or ABORT): a
   * graceful stop lets the MTA finish the message rather than fall back on milter_default_action
   * for it. A session waiting between messages is idle.
   */
  idle(): Promise<void> {
    if (this.betweenMessages()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private betweenMessages(): boolean {
    return this.socket.destroyed || (this.state.phase !== "message" && this.state.phase !== "awaiting_decision");
  }

  private wakeIdleWaiters(): void {
    if (this.idleWaiters.length > 0 && this.betweenMessages()) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private onData(chunk: Buffer): void {
    const { commands, error } = this.decoder.push(chunk);
    this.queued.push(...commands);
    if (this.queued.length > MAX_QUEUED_COMMANDS) {
      this.fail({
        code: "too_many_queued",
        message: `more than ${MAX_QUEUED_COMMANDS} commands sent ahead of a reply`,
      });
      return;
    }
    this.drain();
    if (error) this.fail(error);
  }

  private onEnd(): void {
    if (this.decoder.pending > 0) {
      this.fail({
        code: "closed",
        message: `the MTA closed the connection inside a frame (${this.decoder.pending} bytes)`,
      });
      return;
    }
    this.peerEnded = true;
    this.endIfDone();
  }

  /** Ends our side once the MTA has ended its own and every command it sent is answered. */
  private endIfDone(): void {
    if (this.peerEnded && this.deciding === undefined && this.queued.length === 0 && !this.socket.writableEnded) {
      this.socket.end();
    }
  }

  /** Feeds queued commands until one needs a decision; flushes the replies in one write. */
  private drain(): void {
    while (this.deciding === undefined && this.queued.length > 0 && !this.socket.destroyed) {
      const command = this.queued.shift() as MilterCommand;
      this.apply({ kind: "command", command });
    }
    this.flush();
    this.endIfDone();
    this.wakeIdleWaiters();
  }

  private apply(input: SessionInput): void {
    const { state, effects } = transition(this.state, input);
    this.state = state;
    if (input.kind === "command") this.timeIdle(input.command.kind);
    for (const effect of effects) {
      switch (effect.kind) {
        case "reply":
          this.out.push(effect.bytes);
          break;
        case "check": {
          const { checkId, request } = effect;
          // A local client is accepted without asking: no decision, no span.
          const span = request.localClient ? undefined : startShimSpan("milter", request.stage);
          // .then() runs after `deciding` is set, even for a local client's immediate answer.
          this.deciding = this.lookup(request, span).then((decision) =>
            this.onDecision(checkId, request, decision, span),
          );
          break;
        }
        case "close":
          this.flush();
          if (effect.error) this.fail(effect.error);
          else this.socket.end();
          return;
      }
    }
  }

  /**
   * Between DATA and the end of the message the MTA sends nothing while its client uploads the
   * message (headers and body are not asked for), so the idle timeout would cut a slow upload,
   * and the retry would be as slow: that stretch gets MESSAGE_TIMEOUT_MS instead.
   */
  private timeIdle(command: MilterCommand["kind"]): void {
    if (command === "data") this.socket.setTimeout(Math.max(MESSAGE_TIMEOUT_MS, this.options.idleTimeoutMs));
    else if (command === "bodyeob" || command === "abort") this.socket.setTimeout(this.options.idleTimeoutMs);
  }

  /** The decision for one recipient; a local client is accepted without asking. */
  private async lookup(fields: CheckFields, span: Span | undefined): Promise<Decision> {
    if (fields.localClient) return LOCAL_ACCEPT;
    const response = await this.options.decisions.decide(
      {
        clientAddress: fields.clientAddress,
        clientName: fields.clientName === "unknown" ? "" : fields.clientName,
        heloName: fields.heloName,
        sender: fields.sender,
        recipient: fields.recipient,
        saslUsername: fields.saslUsername,
        queueId: fields.queueId,
        instance: "",
        protocolState: fields.stage === "data" ? ProtocolState.PROTOCOL_STATE_DATA : ProtocolState.PROTOCOL_STATE_RCPT,
        mtaId: this.options.mtaId,
      },
      span,
    );
    return toDecision(response);
  }

  private onDecision(checkId: number, fields: CheckFields, decision: Decision, span: Span | undefined): void {
    // Counted as answered: the session never defers some checks (see resolve), whatever came back.
    const action = fields.localClient ? "local" : resolve(decision, fields).action;
    this.options.metrics.answered(fields.stage, action);
    endShimSpan(span, action);
    this.deciding = undefined;
    if (this.socket.destroyed) return;
    this.apply({ kind: "decision", checkId, decision });
    this.drain();
  }

  private flush(): void {
    if (this.out.length === 0 || this.socket.destroyed) return;
    writeReply(this.socket, this.out.length === 1 ? (this.out[0] as Buffer) : Buffer.concat(this.out));
    this.out = [];
  }

  private fail(error: MilterError): void {
    this.options.metrics.protocolError(error.code);
    this.options.log.warn("milter protocol error: closing the connection", {
      code: error.code,
      error: error.message,
      peer: this.socket.remoteAddress ?? "unix",
    });
    this.socket.destroy();
  }
}

/** Starts the milter server. */
export function startMilterServer(options: MilterServerOptions): Promise<ShimListener> {
  return listenShim({
    listen: options.listen,
    idleTimeoutMs: options.idleTimeoutMs,
    metrics: options.metrics,
    handle: (socket) => new MilterConnection(socket, options),
    onError: (error) => options.log.warn("accepting a connection failed", { error: error.message }),
  });
}
