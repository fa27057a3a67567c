/**
 * The decision engine: validates a Check, applies the static rules, normalises the triplet,
 * asks the store (bounded by the store timeout and the caller's deadline) and maps the outcome
 * to an SMTP-level answer. A store failure is answered by the failure mode, never thrown.
 */
import {
  Action,
  actionToJSON,
  type CheckRequest,
  type CheckResponse,
  Reason,
  reasonToJSON,
} from "../contract/gen/greyfleet/v1/greylist";
import type { CheckOptions, Decider } from "../shared/decider";
import { describeError, GreyfleetError } from "../shared/errors";
import { type Logger, RateLimitedLog } from "../shared/logging";
import type { DecisionMetrics } from "../shared/metrics";
import { xGreylistValue } from "./domain/header";
import { clientNetwork, type NetworkGrouping, normaliseRecipient, normaliseSender } from "./domain/normalise";
import type { GreylistPolicy, Outcome } from "./domain/verdict";
import type { GreylistStore } from "./store/store";
import { isInvalid, type ValidCheck, validateCheck } from "./validate";

/** An SMTP reply: code, enhanced status code, text. */
export interface SmtpReply {
  readonly code: number;
  readonly enhancedStatusCode: string;
  readonly text: string;
}

/** Everything the engine needs, wired by main.ts. */
export interface EngineOptions {
  readonly store: GreylistStore;
  readonly policy: GreylistPolicy;
  readonly grouping: NetworkGrouping;
  /** open: accept when the store is unavailable; tempfail: defer. */
  readonly failureMode: "open" | "tempfail";
  readonly storeTimeoutMs: number;
  /** The reply of a greylisting deferral (default 451 4.7.1). */
  readonly deferReply: SmtpReply;
  /** Product and host written into the X-Greylist header. */
  readonly product: string;
  readonly hostname: string;
  readonly failureLogIntervalMs: number;
  readonly metrics: DecisionMetrics;
  readonly log: Logger;
  /** Clock for decisions the store did not make (failure mode); epoch ms. */
  readonly now?: () => number;
}

/** The reply under the tempfail failure mode. */
export const STORE_UNAVAILABLE_REPLY: SmtpReply = {
  code: 451,
  enhancedStatusCode: "4.3.0",
  text: "Greylisting service temporarily unavailable, please try again later",
};

const ACCEPT_FIELDS = { retryAfterSeconds: 0, smtpCode: 0, enhancedStatusCode: "", smtpText: "" } as const;

function accept(reason: Reason, header = "", delayedSeconds = 0): CheckResponse {
  return { action: Action.ACTION_ACCEPT, reason, ...ACCEPT_FIELDS, xGreylistHeader: header, delayedSeconds };
}

function defer(reason: Reason, reply: SmtpReply, retryAfterSeconds: number): CheckResponse {
  return {
    action: Action.ACTION_DEFER,
    reason,
    retryAfterSeconds,
    smtpCode: reply.code,
    enhancedStatusCode: reply.enhancedStatusCode,
    smtpText: reply.text,
    xGreylistHeader: "",
    delayedSeconds: 0,
  };
}

/** The most common answers, shared: serialising does not change them. */
const KNOWN_TRIPLET = Object.freeze(accept(Reason.REASON_KNOWN_TRIPLET));
const CLIENT_AUTO_WHITELISTED = Object.freeze(accept(Reason.REASON_CLIENT_AUTO_WHITELISTED));

/** Raised inside the engine when the store does not answer within its time. */
class StoreTimeout extends Error {}

/** The greylisting engine; a Decider. */
export class Engine implements Decider {
  private readonly failureLog: RateLimitedLog;
  private readonly now: () => number;
  /** Counter children by "action:reason": label sets are bounded, and binding them once is cheap. */
  private readonly decisionCounters = new Map<string, { inc(): void; labels: DecisionLabels }>();

  private readonly storeDecideDuration: { observe(seconds: number): void };

  constructor(private readonly options: EngineOptions) {
    this.now = options.now ?? Date.now;
    this.storeDecideDuration = options.metrics.storeDuration.labels(options.store.kind, "decide");
    this.failureLog = new RateLimitedLog(options.failureLogIntervalMs, this.now);
  }

  async check(request: CheckRequest, callOptions: CheckOptions = {}): Promise<CheckResponse> {
    const started = performance.now();
    const valid = validateCheck(request);
    if (isInvalid(valid)) {
      this.options.metrics.invalidRequests.inc({ field: valid.field });
      throw new GreyfleetError("invalid_argument", valid.message);
    }
    const response = (await this.staticVerdict(valid)) ?? (await this.greylist(valid, callOptions));
    this.record(valid, response, started);
    return response;
  }

  /** Verdicts that need no store: outgoing mail and the stage rules of the null sender. */
  private staticVerdict(valid: ValidCheck): CheckResponse | undefined {
    const { request, stage } = valid;
    if (request.saslUsername !== "") return accept(Reason.REASON_AUTHENTICATED_CLIENT);
    const nullSender = request.sender === "" || request.sender === "<>";
    if (stage === "rcpt" && nullSender) return accept(Reason.REASON_NULL_SENDER_DEFERRED_TO_DATA);
    if (stage === "data" && !nullSender) return accept(Reason.REASON_NOT_GREYLISTED_AT_STAGE);
    return undefined;
  }

  private async greylist(valid: ValidCheck, callOptions: CheckOptions): Promise<CheckResponse> {
    const { request, client } = valid;
    const query = {
      network: clientNetwork(client, this.options.grouping),
      sender: normaliseSender(request.sender),
      recipient: normaliseRecipient(request.recipient),
      singleUse: valid.stage === "data",
    };
    const budgetMs = Math.min(
      this.options.storeTimeoutMs,
      callOptions.deadlineMs === undefined ? Number.POSITIVE_INFINITY : callOptions.deadlineMs - this.now(),
    );
    const storeStarted = performance.now();
    try {
      const decision = await withTimeout(this.options.store.decide(query, this.options.policy), budgetMs);
      this.storeDecideDuration.observe(seconds(storeStarted));
      return this.answer(decision.outcome, decision.nowMs);
    } catch (error) {
      return this.failureMode(error);
    }
  }

  private answer(outcome: Outcome, nowMs: number): CheckResponse {
    switch (outcome.kind) {
      case "new_triplet":
        return defer(Reason.REASON_NEW_TRIPLET, this.options.deferReply, Math.ceil(outcome.retryAfterMs / 1000));
      case "too_early":
        return defer(Reason.REASON_TOO_EARLY, this.options.deferReply, Math.ceil(outcome.retryAfterMs / 1000));
      case "passed_after_retry": {
        const delayed = Math.floor(outcome.delayedMs / 1000);
        const header = xGreylistValue(delayed, this.options.product, this.options.hostname, nowMs);
        return accept(Reason.REASON_PASSED_AFTER_RETRY, header, delayed);
      }
      case "known_triplet":
        return KNOWN_TRIPLET;
      case "client_auto_whitelisted":
        return CLIENT_AUTO_WHITELISTED;
    }
  }

  private failureMode(error: unknown): CheckResponse {
    const { failureMode, metrics, store, log } = this.options;
    const kind = error instanceof StoreTimeout ? "timeout" : "error";
    metrics.storeErrors.inc({ store: store.kind, operation: "decide", kind });
    metrics.failureModeActivations.inc({ mode: failureMode });
    this.failureLog.maybe((suppressed) =>
      log.warn("store unavailable: failure mode decides", {
        failure_mode: failureMode,
        store: store.kind,
        error: describeError(error),
        suppressed_since_last: suppressed,
      }),
    );
    return failureMode === "open"
      ? accept(Reason.REASON_STORE_UNAVAILABLE)
      : defer(Reason.REASON_STORE_UNAVAILABLE, STORE_UNAVAILABLE_REPLY, 0);
  }

  private record(valid: ValidCheck, response: CheckResponse, started: number): void {
    const { metrics, log } = this.options;
    const counter = this.decisionCounter(response);
    counter.inc();
    metrics.decisionDuration.observe(seconds(started));
    // Deferrals, passes and failure-mode answers are logged; plain accepts only at debug level.
    const notable =
      response.action !== Action.ACTION_ACCEPT ||
      response.delayedSeconds > 0 ||
      response.reason === Reason.REASON_STORE_UNAVAILABLE;
    if (!log.enabled(notable ? "info" : "debug")) return;
    const { request } = valid;
    (notable ? log.info : log.debug)("decision", {
      ...counter.labels,
      client_address: request.clientAddress,
      client_name: request.clientName || undefined,
      helo: request.heloName || undefined,
      sender: request.sender,
      recipient: request.recipient,
      queue_id: request.queueId || undefined,
      mta: request.mtaId || undefined,
      retry_after_s: response.retryAfterSeconds || undefined,
      delayed_s: response.delayedSeconds || undefined,
    });
  }

  /** The decisions counter child of a response's action and reason. */
  private decisionCounter(response: CheckResponse): { inc(): void; labels: DecisionLabels } {
    const key = `${response.action}:${response.reason}`;
    let counter = this.decisionCounters.get(key);
    if (!counter) {
      const labels = {
        action: actionToJSON(response.action).replace("ACTION_", "").toLowerCase(),
        reason: reasonToJSON(response.reason).replace("REASON_", "").toLowerCase(),
      };
      const child = this.options.metrics.decisions.labels(labels);
      counter = { inc: () => child.inc(), labels };
      this.decisionCounters.set(key, counter);
    }
    return counter;
  }
}

/** Seconds since a performance.now() reading. */
function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

/** Labels of greyfleet_decisions_total. */
interface DecisionLabels {
  readonly action: string;
  readonly reason: string;
}

/** Rejects with StoreTimeout if `promise` does not settle within `ms`. */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  if (ms <= 0) {
    promise.catch(() => {}); // the late answer is not needed
    return Promise.reject(new StoreTimeout("no time left before the caller's deadline"));
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new StoreTimeout(`store did not answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
