/**
 * The decision engine: validates a Check, applies the static rules (lists, greytraps, outgoing
 * mail), normalises the triplet, asks the store (bounded by the store timeout and the caller's
 * deadline) and maps the outcome to an SMTP-level answer. A store failure is answered by the
 * failure mode, never thrown. In shadow mode every answer is an accept that says what
 * enforcement would have done.
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
import { endStoreSpan, failSpan, startStoreSpan } from "../shared/tracing";
import { xGreylistValue } from "./domain/header";
import { clientNetwork, type NetworkGrouping, normaliseRecipient, normaliseSender } from "./domain/normalise";
import type { GreylistPolicy } from "./domain/verdict";
import type { ListsCache } from "./lists-cache";
import {
  accept,
  BLOCKED_REPLIES,
  CLIENT_AUTO_WHITELISTED,
  KNOWN_TRIPLET,
  refuse,
  type SmtpReply,
  STORE_UNAVAILABLE_REPLY,
  shadowed,
} from "./replies";
import { applyRules, type RuleSettings } from "./rules";
import type { GreylistStore, OutboundPair, StoreOutcome, TripletQuery } from "./store/store";
import { isInvalid, type ValidCheck, validateCheck } from "./validate";

export type { SmtpReply } from "./replies";
export { STORE_UNAVAILABLE_REPLY } from "./replies";

/** Everything the engine needs, wired by main.ts. */
export interface EngineOptions {
  readonly store: GreylistStore;
  readonly policy: GreylistPolicy;
  readonly grouping: NetworkGrouping;
  /** The lists in force (store entries and the default whitelist). */
  readonly lists: ListsCache;
  readonly rules: RuleSettings;
  /** enforce: answers as decided; shadow: always accept, saying what enforcement would do. */
  readonly mode: "enforce" | "shadow";
  /** How long a greytrap blocks the client's network, ms. */
  readonly greytrapBlockMs: number;
  /** Whether replies to local users' outgoing mail are looked up (and the pairs learned). */
  readonly outboundLearning: boolean;
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
  /** Clock for rules and for decisions the store did not make; epoch ms. */
  readonly now?: () => number;
}

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
    const response = await this.decide(valid, callOptions);
    this.record(valid, response, started);
    return this.options.mode === "shadow" ? shadowed(response) : response;
  }

  /** The store's kind, recorded on the service's spans. */
  get storeKind(): string {
    return this.options.store.kind;
  }

  /** The static rules' settings (Explain applies them too). */
  get ruleSettings(): RuleSettings {
    return this.options.rules;
  }

  /** The query the store is asked for a valid request (also what Explain shows). */
  query(valid: ValidCheck): TripletQuery {
    return {
      network: clientNetwork(valid.client, this.options.grouping),
      sender: normaliseSender(valid.request.sender),
      recipient: normaliseRecipient(valid.request.recipient),
      singleUse: valid.stage === "data",
      outbound: this.options.outboundLearning,
    };
  }

  /** What the rules and the store decide, in enforcing terms. */
  private async decide(valid: ValidCheck, callOptions: CheckOptions): Promise<CheckResponse> {
    const rules = applyRules(valid, this.options.lists.current, this.options.rules, this.now());
    switch (rules.kind) {
      case "answer":
        if (rules.list) this.options.metrics.listHits.inc({ kind: rules.list });
        return rules.response;
      case "greytrap":
        this.options.metrics.listHits.inc({ kind: "greytrap" });
        await this.sideEffect("block network", callOptions, () =>
          this.options.store.blockNetwork(
            clientNetwork(valid.client, this.options.grouping),
            this.options.greytrapBlockMs,
          ),
        );
        return rules.response;
      case "outbound":
        if (this.options.outboundLearning && rules.pairs.length > 0) await this.learn(rules.pairs, callOptions);
        return rules.response;
      case "greylist":
        return this.greylist(valid, callOptions);
    }
  }

  private learn(pairs: readonly OutboundPair[], callOptions: CheckOptions): Promise<void> {
    return this.sideEffect("learn outbound", callOptions, () =>
      this.options.store.learnOutbound(pairs, this.options.policy.maxAgeMs),
    );
  }

  /** Remembers outgoing pairs reported by an MTA (ReportOutgoing). */
  async reportOutgoing(sender: string, recipients: readonly string[]): Promise<number> {
    if (!this.options.outboundLearning || sender === "") return 0;
    const pairs = recipients
      .filter((recipient) => recipient !== "")
      .map((recipient) => ({ local: normaliseRecipient(sender), external: normaliseSender(recipient) }));
    await withTimeout(
      this.options.store.learnOutbound(pairs, this.options.policy.maxAgeMs),
      this.options.storeTimeoutMs,
    );
    return pairs.length;
  }

  /** A store write that does not change the answer: bounded, and logged if it fails. */
  private async sideEffect(what: string, callOptions: CheckOptions, write: () => Promise<void>): Promise<void> {
    try {
      const budget = this.budget(callOptions);
      if (budget <= 0) throw new StoreTimeout("no time left before the caller's deadline");
      await withTimeout(write(), budget);
    } catch (error) {
      this.options.metrics.storeErrors.inc({
        store: this.options.store.kind,
        operation: what.replace(" ", "_"),
        kind: error instanceof StoreTimeout ? "timeout" : "error",
      });
      this.failureLog.maybe((suppressed) =>
        this.options.log.warn(`store failed to ${what}`, {
          error: describeError(error),
          suppressed_since_last: suppressed,
        }),
      );
    }
  }

  private budget(callOptions: CheckOptions): number {
    const left = callOptions.deadlineMs === undefined ? Number.POSITIVE_INFINITY : callOptions.deadlineMs - this.now();
    return Math.min(this.options.storeTimeoutMs, left);
  }

  private async greylist(valid: ValidCheck, callOptions: CheckOptions): Promise<CheckResponse> {
    const storeStarted = performance.now();
    // Started before the first await: the caller's span (service or shim) is still the active one.
    const span = startStoreSpan(this.options.store.kind);
    try {
      // No time left: the store is not asked at all (a write the caller cannot hear about, such
      // as using up a single-use pass, would be lost to it).
      const budget = this.budget(callOptions);
      if (budget <= 0) throw new StoreTimeout("no time left before the caller's deadline");
      const decision = await withTimeout(this.options.store.decide(this.query(valid), this.options.policy), budget);
      this.storeDecideDuration.observe(seconds(storeStarted));
      endStoreSpan(span, decision.outcome.kind);
      return this.answer(decision.outcome, decision.nowMs);
    } catch (error) {
      failSpan(span, error instanceof StoreTimeout ? "timeout" : "error");
      return this.failureMode(error);
    }
  }

  /** The answer for a store outcome decided at `nowMs`. */
  answer(outcome: StoreOutcome, nowMs: number): CheckResponse {
    const { deferReply } = this.options;
    switch (outcome.kind) {
      case "new_triplet":
        return refuse(Reason.REASON_NEW_TRIPLET, deferReply, Math.ceil(outcome.retryAfterMs / 1000));
      case "too_early":
        return refuse(Reason.REASON_TOO_EARLY, deferReply, Math.ceil(outcome.retryAfterMs / 1000));
      case "passed_after_retry": {
        const delayed = Math.floor(outcome.delayedMs / 1000);
        const header = xGreylistValue(delayed, this.options.product, this.options.hostname, nowMs);
        return accept(Reason.REASON_PASSED_AFTER_RETRY, header, delayed);
      }
      case "known_triplet":
        return KNOWN_TRIPLET;
      case "client_auto_whitelisted":
        return CLIENT_AUTO_WHITELISTED;
      case "network_blocked":
        return refuse(Reason.REASON_NETWORK_GREYTRAPPED, BLOCKED_REPLIES[this.options.rules.greytrapAction]);
      case "outbound_reply":
        return accept(Reason.REASON_OUTBOUND_REPLY);
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
      : refuse(Reason.REASON_STORE_UNAVAILABLE, STORE_UNAVAILABLE_REPLY);
  }

  private record(valid: ValidCheck, response: CheckResponse, started: number): void {
    const { metrics, log } = this.options;
    const counter = this.decisionCounter(response);
    counter.inc();
    metrics.decisionDuration.observe(seconds(started));
    // Deferrals, rejections, passes and failure-mode answers are logged; plain accepts only at debug level.
    const notable =
      response.action !== Action.ACTION_ACCEPT ||
      response.delayedSeconds > 0 ||
      response.reason === Reason.REASON_STORE_UNAVAILABLE;
    if (!log.enabled(notable ? "info" : "debug")) return;
    const { request } = valid;
    (notable ? log.info : log.debug)("decision", {
      ...counter.labels,
      mode: this.options.mode === "shadow" ? "shadow" : undefined,
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

  /** The decisions counter child of a response's action and reason (in shadow mode: the enforced action). */
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
