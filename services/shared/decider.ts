/**
 * What a shim needs from the decision service. Implemented by the gRPC client (a shim on its own
 * MX host) and by the engine itself (`greyfleet all`, in-process).
 */
import type { CheckRequest, CheckResponse } from "../contract/gen/greyfleet/v1/greylist";

/** Per-call options. */
export interface CheckOptions {
  /** Absolute deadline, epoch ms: past it the caller no longer waits for the answer. */
  readonly deadlineMs?: number;
}

/** Decides one recipient. Rejects with a GreyfleetError (invalid_argument, unavailable, ...). */
export interface Decider {
  check(request: CheckRequest, options?: CheckOptions): Promise<CheckResponse>;
}
