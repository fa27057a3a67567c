/**
 * The GreylistService gRPC handlers: the engine behind grpc-js, errors mapped to status codes.
 * While tracing is on each Check gets a server span, a child of the caller's span named by the
 * StreamedCheck's traceparent (or the unary call's traceparent metadata).
 */
import { type ServerDuplexStream, type ServerUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import type {
  CheckRequest,
  CheckResponse,
  CheckStreamRequest,
  CheckStreamResponse,
  GreylistServiceServer,
  ReportOutgoingRequest,
  ReportOutgoingResponse,
  StreamedAnswer,
} from "../../contract/gen/greyfleet/v1/greylist";
import type { Decider } from "../../shared/decider";
import { describeError, type ErrorCode, GreyfleetError } from "../../shared/errors";
import type { Logger } from "../../shared/logging";
import { endServiceSpan, failSpan, inSpan, type Span, startServiceSpan, tracingEnabled } from "../../shared/tracing";

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
const CONTROL = /[\u0000-\u001f\u007f]/;

/** gRPC status of each error code. */
export const GRPC_STATUS: Readonly<Record<ErrorCode, status>> = {
  invalid_argument: status.INVALID_ARGUMENT,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  internal: status.INTERNAL,
};

/** Checks in flight on one CheckStream beyond this are refused with RESOURCE_EXHAUSTED. */
export const MAX_IN_FLIGHT_PER_STREAM = 1024;
/** Checks in one CheckStreamRequest beyond this are refused with INVALID_ARGUMENT (the contract's limit). */
export const MAX_CHECKS_PER_MESSAGE = 256;

/** The call's deadline as epoch ms, or undefined when the caller set none. */
export function deadlineMs(call: ServerUnaryCall<unknown, unknown>): number | undefined {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}

/** The GreylistService implementation and a way to end its open streams on shutdown. */
export interface GreylistServiceHandle {
  readonly implementation: GreylistServiceServer;
  /** Answers what is in flight on every open stream, refuses new requests, then ends them. */
  drain(): Promise<void>;
}

/** What the service needs of the engine: decisions, and learning reported outgoing mail. */
export interface DecisionEngine extends Decider {
  reportOutgoing(sender: string, recipients: readonly string[]): Promise<number>;
  /** The store's kind (memory, sqlite, redis), recorded on the service's spans. */
  readonly storeKind?: string;
}

/** Outgoing recipients per ReportOutgoing call at most, and their longest address in bytes. */
const MAX_REPORTED_RECIPIENTS = 1_000;
const MAX_ADDRESS_BYTES = 320;

/** Which limit refused a check or a stream. */
export type OverloadLimit = "checks_in_flight" | "check_streams";

/** How much the service takes on at once, and who hears about it. */
export interface GreylistServiceOptions {
  /** Checks decided at once, unary and streamed together; one more is refused with RESOURCE_EXHAUSTED. */
  readonly maxChecksInFlight: number;
  /** CheckStreams open at once; one more is ended with RESOURCE_EXHAUSTED. */
  readonly maxCheckStreams: number;
  /** Told how many CheckStreams are open whenever that changes. */
  readonly onStreams?: (open: number) => void;
  /** Told of each check or stream refused by a limit. */
  readonly onOverload?: (limit: OverloadLimit) => void;
}

/** Builds the GreylistService implementation over the engine. */
export function greylistService(
  engine: DecisionEngine,
  log: Logger,
  options: GreylistServiceOptions,
): GreylistServiceHandle {
  const { maxChecksInFlight, maxCheckStreams, onStreams = () => {}, onOverload = () => {} } = options;
  /** Checks being decided now, on every stream and unary call. */
  let checksInFlight = 0;
  const overloaded = (): string | undefined => {
    if (checksInFlight < maxChecksInFlight) return undefined;
    onOverload("checks_in_flight");
    return `the decision service has ${maxChecksInFlight} checks in flight (--max-checks-in-flight)`;
  };
  const failed = (thrown: unknown): GreyfleetError => {
    const error = GreyfleetError.from(thrown);
    if (error.code === "internal") log.error("Check failed", { error: describeError(thrown) });
    return error;
  };
  const streams = new Set<StreamState>();
  let draining = false;
  /** Forgets a stream that is over (ended, failed or cancelled), and wakes a drain() waiting for it. */
  const forget = (state: StreamState): void => {
    state.ended = true;
    streams.delete(state);
    onStreams(streams.size);
    state.idle?.();
  };

  /** Asks the engine for one Check, within the service's span for it, counted while in flight. */
  const decide = (
    request: CheckRequest,
    deadline: number | undefined,
    span: Span | undefined,
    onResponse: (response: CheckResponse) => void,
    onError: (error: GreyfleetError) => void,
  ): void => {
    checksInFlight++;
    inSpan(span, () => engine.check(request, { deadlineMs: deadline })).then(
      (response) => {
        checksInFlight--;
        if (span) endServiceSpan(span, response, engine.storeKind);
        onResponse(response);
      },
      (thrown: unknown) => {
        checksInFlight--;
        const error = failed(thrown);
        if (span) failSpan(span, error.code);
        onError(error);
      },
    );
  };

  const check = (call: ServerUnaryCall<CheckRequest, CheckResponse>, callback: sendUnaryData<CheckResponse>): void => {
    const refusal = overloaded();
    if (refusal) {
      callback({ code: status.RESOURCE_EXHAUSTED, details: refusal });
      return;
    }
    const span = tracingEnabled()
      ? startServiceSpan("check", metadataValue(call, "traceparent"), metadataValue(call, "tracestate"))
      : undefined;
    decide(
      call.request,
      deadlineMs(call),
      span,
      (response) => callback(null, response),
      (error) => callback({ code: GRPC_STATUS[error.code], details: error.message }),
    );
  };

  /** Why a streamed check (counted in its stream's inFlight) is refused, if it is. */
  const streamedRefusal = (state: StreamState): [status, string] | undefined => {
    if (draining) return [status.UNAVAILABLE, "the decision service is shutting down"];
    if (state.inFlight > MAX_IN_FLIGHT_PER_STREAM) {
      return [status.RESOURCE_EXHAUSTED, `more than ${MAX_IN_FLIGHT_PER_STREAM} checks in flight on this stream`];
    }
    const overload = overloaded();
    return overload ? [status.RESOURCE_EXHAUSTED, overload] : undefined;
  };

  const checkStream = (call: ServerDuplexStream<CheckStreamRequest, CheckStreamResponse>): void => {
    if (streams.size >= maxCheckStreams) {
      onOverload("check_streams");
      call.emit("error", {
        code: status.RESOURCE_EXHAUSTED,
        details: `the decision service has ${maxCheckStreams} CheckStreams open (--max-check-streams)`,
      });
      return;
    }
    const state: StreamState = { call, inFlight: 0, ended: false, idle: undefined, batch: [] };
    streams.add(state);
    onStreams(streams.size);
    const finish = (): void => {
      if (state.ended || state.inFlight > 0 || !(draining || call.readableEnded)) return;
      flush(state);
      call.end();
      forget(state);
    };
    const answer = (item: StreamedAnswer): void => {
      state.inFlight--;
      // Answers completing in one turn of the event loop go out in one message.
      if (state.batch.push(item) === 1) setImmediate(() => flush(state));
      finish();
    };
    call.on("data", (message: CheckStreamRequest) => {
      if (state.ended) return;
      if (message.checks.length > MAX_CHECKS_PER_MESSAGE) {
        // Not a client of this contract: answering each check would make a 1 MB message of empty
        // checks into a response twenty times its size. The stream ends, with the reason.
        forget(state);
        call.emit("error", {
          code: status.INVALID_ARGUMENT,
          details: `${message.checks.length} checks in one message, over ${MAX_CHECKS_PER_MESSAGE}: the stream is ended`,
        });
        return;
      }
      for (const { id, check, timeoutMs, traceparent } of message.checks) {
        state.inFlight++;
        if (!check) {
          answer({ id, check: undefined, errorCode: status.INVALID_ARGUMENT, errorMessage: "check is required" });
          continue;
        }
        const refusal = streamedRefusal(state);
        if (refusal) {
          answer({ id, check: undefined, errorCode: refusal[0], errorMessage: refusal[1] });
          continue;
        }
        const deadline = timeoutMs > 0 ? Date.now() + timeoutMs : undefined;
        decide(
          check,
          deadline,
          startServiceSpan("checkStream", traceparent),
          (response) => answer({ id, check: response, errorCode: 0, errorMessage: "" }),
          (error) => answer({ id, check: undefined, errorCode: GRPC_STATUS[error.code], errorMessage: error.message }),
        );
      }
    });
    call.on("end", finish);
    // The client went away (cancelled, or its connection dropped): nothing to answer any more. A
    // stream paused because its client took no answers never emits "end", so "close" counts too:
    // without it such a stream would stay tracked, with its buffers, for good.
    const gone = (): void => {
      if (!state.ended) forget(state);
    };
    call.on("error", gone);
    call.on("close", gone);
  };

  const reportOutgoing = (
    call: ServerUnaryCall<ReportOutgoingRequest, ReportOutgoingResponse>,
    callback: sendUnaryData<ReportOutgoingResponse>,
  ): void => {
    const { sender, recipients } = call.request;
    const bad = [sender, ...recipients].find(
      (address) => Buffer.byteLength(address) > MAX_ADDRESS_BYTES || CONTROL.test(address),
    );
    if (recipients.length > MAX_REPORTED_RECIPIENTS || bad !== undefined) {
      const details =
        bad !== undefined
          ? `address ${JSON.stringify(bad.slice(0, 60))} is over ${MAX_ADDRESS_BYTES} bytes or has a control character`
          : `more than ${MAX_REPORTED_RECIPIENTS} recipients`;
      callback({ code: status.INVALID_ARGUMENT, details });
      return;
    }
    engine.reportOutgoing(sender, recipients).then(
      (learned) => callback(null, { learned }),
      (thrown: unknown) => {
        const error = failed(thrown);
        callback({
          code: error.code === "internal" ? status.UNAVAILABLE : GRPC_STATUS[error.code],
          details: error.message,
        });
      },
    );
  };

  return {
    implementation: { check, checkStream, reportOutgoing },
    drain: () => {
      draining = true;
      return Promise.all(
        [...streams].map(
          (state) =>
            new Promise<void>((resolve) => {
              state.idle = resolve;
              if (state.inFlight === 0) {
                flush(state);
                state.call.end();
                forget(state);
              }
            }),
        ),
      ).then(() => undefined);
    },
  };
}

/** The first value of a unary call's ASCII metadata header, if any. */
function metadataValue(call: ServerUnaryCall<unknown, unknown>, key: string): string | undefined {
  const value = call.metadata.get(key)[0];
  return typeof value === "string" ? value : undefined;
}

/** One open CheckStream. */
interface StreamState {
  readonly call: ServerDuplexStream<CheckStreamRequest, CheckStreamResponse>;
  inFlight: number;
  ended: boolean;
  /** Resolves a pending drain() when the stream has ended. */
  idle: (() => void) | undefined;
  /** Answers waiting to go out together. */
  batch: StreamedAnswer[];
}

/**
 * Writes the waiting answers of a stream as one message. While the client does not take its
 * answers (HTTP/2 flow control holds them back), its checks are not read either: a client that
 * never reads cannot make the service decide, and hold answers, without bound.
 */
function flush(state: StreamState): void {
  if (state.batch.length === 0) return;
  const answers = state.batch;
  state.batch = [];
  const { call } = state;
  if (call.cancelled || state.ended) return;
  if (!call.write({ answers }) && !call.isPaused()) {
    call.pause();
    call.once("drain", () => call.resume());
  }
}
