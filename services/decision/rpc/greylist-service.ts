/** The GreylistService gRPC handler: the engine behind grpc-js, errors mapped to status codes. */
import { type ServerUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import type { CheckRequest, CheckResponse, GreylistServiceServer } from "../../contract/gen/greyfleet/v1/greylist";
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

/** The call's deadline as epoch ms, or undefined when the caller set none. */
export function deadlineMs(call: ServerUnaryCall<unknown, unknown>): number | undefined {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}

/** Builds the GreylistService implementation over a Decider (the engine). */
export function greylistService(engine: Decider, log: Logger): GreylistServiceServer {
  return {
    check(call: ServerUnaryCall<CheckRequest, CheckResponse>, callback: sendUnaryData<CheckResponse>): void {
      engine.check(call.request, { deadlineMs: deadlineMs(call) }).then(
        (response) => callback(null, response),
        (thrown: unknown) => {
          const error = GreyfleetError.from(thrown);
          if (error.code === "internal") log.error("Check failed", { error: describeError(thrown) });
          callback({ code: GRPC_STATUS[error.code], details: error.message });
        },
      );
    },
  };
}
