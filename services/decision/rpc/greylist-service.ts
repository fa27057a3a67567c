/** The GreylistService gRPC handlers: the engine behind grpc-js, errors mapped to status codes. */
import { type ServerDuplexStream, type ServerUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import type {
  CheckRequest,
  CheckResponse,
  CheckStreamRequest,
  CheckStreamResponse,
  GreylistServiceServer,
} from "../../contract/gen/greyfleet/v1/greylist";
import type { Decider } from "../../shared/decider";
import { describeError, type ErrorCode, GreyfleetError } from "../../shared/errors";
import type { Logger } from "../../shared/logging";

/** gRPC status of each error code. */
export const GRPC_STATUS: Readonly<Record<ErrorCode, status>> = {
  invalid_argument: status.INVALID_ARGUMENT,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  internal: status.INTERNAL,
};

/** Checks in flight on one CheckStream beyond this are refused with RESOURCE_EXHAUSTED. */
export const MAX_IN_FLIGHT_PER_STREAM = 1024;

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

/** Builds the GreylistService implementation over a Decider (the engine). */
export function greylistService(engine: Decider, log: Logger): GreylistServiceHandle {
  const failed = (thrown: unknown): GreyfleetError => {
    const error = GreyfleetError.from(thrown);
    if (error.code === "internal") log.error("Check failed", { error: describeError(thrown) });
    return error;
  };
  const streams = new Set<StreamState>();
  let draining = false;

  const check = (call: ServerUnaryCall<CheckRequest, CheckResponse>, callback: sendUnaryData<CheckResponse>): void => {
    engine.check(call.request, { deadlineMs: deadlineMs(call) }).then(
      (response) => callback(null, response),
      (thrown: unknown) => {
        const error = failed(thrown);
        callback({ code: GRPC_STATUS[error.code], details: error.message });
      },
    );
  };

  const checkStream = (call: ServerDuplexStream<CheckStreamRequest, CheckStreamResponse>): void => {
    const state: StreamState = { call, inFlight: 0, ended: false, idle: undefined };
    streams.add(state);
    const finish = (): void => {
      if (state.ended || state.inFlight > 0 || !(draining || call.readableEnded)) return;
      state.ended = true;
      streams.delete(state);
      call.end();
      state.idle?.();
    };
    const answer = (response: CheckStreamResponse): void => {
      state.inFlight--;
      if (!call.cancelled && !state.ended) call.write(response);
      finish();
    };
    call.on("data", (message: CheckStreamRequest) => {
      state.inFlight++;
      const { id } = message;
      if (draining || state.inFlight > MAX_IN_FLIGHT_PER_STREAM || !message.check) {
        const [code, text] = draining
          ? [status.UNAVAILABLE, "the decision service is shutting down"]
          : !message.check
            ? [status.INVALID_ARGUMENT, "check is required"]
            : [status.RESOURCE_EXHAUSTED, `more than ${MAX_IN_FLIGHT_PER_STREAM} checks in flight on this stream`];
        answer({ id, check: undefined, errorCode: code, errorMessage: text });
        return;
      }
      const deadline = message.timeoutMs > 0 ? Date.now() + message.timeoutMs : undefined;
      engine.check(message.check, { deadlineMs: deadline }).then(
        (response) => answer({ id, check: response, errorCode: 0, errorMessage: "" }),
        (thrown: unknown) => {
          const error = failed(thrown);
          answer({ id, check: undefined, errorCode: GRPC_STATUS[error.code], errorMessage: error.message });
        },
      );
    });
    call.on("end", finish);
    call.on("error", () => {
      // The client went away (cancelled): nothing to answer any more.
      state.ended = true;
      streams.delete(state);
      state.idle?.();
    });
  };

  return {
    implementation: { check, checkStream },
    drain: () => {
      draining = true;
      return Promise.all(
        [...streams].map(
          (state) =>
            new Promise<void>((resolve) => {
              state.idle = resolve;
              if (state.inFlight === 0) {
                state.ended = true;
                streams.delete(state);
                state.call.end();
                resolve();
              }
            }),
        ),
      ).then(() => undefined);
    },
  };
}

/** One open CheckStream. */
interface StreamState {
  readonly call: ServerDuplexStream<CheckStreamRequest, CheckStreamResponse>;
  inFlight: number;
  ended: boolean;
  /** Resolves a pending drain() when the stream has ended. */
  idle: (() => void) | undefined;
}
