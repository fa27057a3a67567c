/**
 * What a shim does around one Check: make the MTA's values fit the contract's bounds (a 300-byte
 * HELO Postfix took is greylisted, not refused), ask with a deadline, and when no answer comes (deadline,
 * service down, an error) apply the shim's failure mode instead, counted and logged at most once
 * per interval. Outgoing mail (an authenticated client) and the null sender at RCPT are never
 * deferred by the failure mode. The shim's span (tracing on) is active during the call, so the
 * Decider's spans join its trace, and records the reason and any failure mode used.
 */
import {
  Action,
  type CheckRequest,
  type CheckResponse,
  ProtocolState,
  Reason,
} from "../contract/gen/greyfleet/v1/greylist";
import { fitForCheck } from "./check-fields";
import type { Decider } from "./decider";
import { describeError, GreyfleetError } from "./errors";
import { type Logger, RateLimitedLog } from "./logging";
import type { ShimMetrics } from "./shim-metrics";
import { inSpan, noteShimDecision, type Span } from "./tracing";

/** The reply under the tempfail failure mode when the decision service does not answer. */
const UNAVAILABLE_DEFER: CheckResponse = Object.freeze({
  action: Action.ACTION_DEFER,
  reason: Reason.REASON_DECISION_SERVICE_UNAVAILABLE,
  retryAfterSeconds: 0,
  smtpCode: 451,
  enhancedStatusCode: "4.3.0",
  smtpText: "Greylisting service temporarily unavailable, please try again later",
  xGreylistHeader: "",
  delayedSeconds: 0,
  shadowAction: Action.ACTION_UNSPECIFIED,
});

const UNAVAILABLE_ACCEPT: CheckResponse = Object.freeze({
  action: Action.ACTION_ACCEPT,
  reason: Reason.REASON_DECISION_SERVICE_UNAVAILABLE,
  retryAfterSeconds: 0,
  smtpCode: 0,
  enhancedStatusCode: "",
  smtpText: "",
  xGreylistHeader: "",
  delayedSeconds: 0,
  shadowAction: Action.ACTION_UNSPECIFIED,
});

/** Asks a Decider on behalf of one shim, with its deadline and failure mode. */
export class ShimDecisions {
  private readonly failureLog: RateLimitedLog;

  constructor(
    private readonly decider: Decider,
    private readonly options: {
      readonly shim: "policy" | "milter";
      readonly timeoutMs: number;
      readonly failureMode: "open" | "tempfail";
      readonly failureLogIntervalMs: number;
      readonly metrics: ShimMetrics;
      readonly log: Logger;
    },
  ) {
    this.failureLog = new RateLimitedLog(options.failureLogIntervalMs);
  }

  /** The decision for `request`, asked within the shim's `span` (undefined while tracing is off); never rejects. */
  async decide(request: CheckRequest, span?: Span): Promise<CheckResponse> {
    const started = performance.now();
    try {
      const deadlineMs = Date.now() + this.options.timeoutMs;
      const fitted = fitForCheck(request);
      const response = await inSpan(span, () => this.decider.check(fitted, { deadlineMs }));
      this.options.metrics.decisionCall((performance.now() - started) / 1000);
      noteShimDecision(span, response.reason);
      return response;
    } catch (thrown) {
      const error = GreyfleetError.from(thrown);
      const cause = error.code === "invalid_argument" ? "invalid_request" : error.code;
      const { failureMode, metrics, log, shim } = this.options;
      metrics.failureMode(failureMode, cause);
      this.failureLog.maybe((suppressed) =>
        log.warn("no decision: failure mode decides", {
          shim,
          failure_mode: failureMode,
          cause,
          error: describeError(thrown),
          suppressed_since_last: suppressed,
        }),
      );
      // Never deferred even now: outgoing mail, and the null sender at RCPT (it is decided at
      // DATA, so sender-verification callouts, which stop after RCPT, always pass).
      const outgoing = request.saslUsername !== "";
      const nullSenderAtRcpt = request.sender === "" && request.protocolState !== ProtocolState.PROTOCOL_STATE_DATA;
      const answer = failureMode === "open" || outgoing || nullSenderAtRcpt ? UNAVAILABLE_ACCEPT : UNAVAILABLE_DEFER;
      noteShimDecision(span, answer.reason, { mode: failureMode, cause });
      return answer;
    }
  }
}
