/**
 * The shims' Decider over gRPC: Checks travel on one long-lived CheckStream (one message each,
 * far cheaper than a unary call per recipient), each bounded by its own deadline. When the
 * stream breaks, every Check in flight fails with "unavailable" at once and the next Check opens
 * a new stream; grpc-js reconnects the channel by itself. Nothing is retried: a Check may have
 * been recorded before its answer was lost. While tracing is on each Check has a client span whose
 * context travels in its StreamedCheck (traceparent), as one stream carries many Checks.
 */
import {
  type ChannelCredentials,
  type ClientDuplexStream,
  connectivityState,
  credentials,
  Metadata,
  status,
} from "@grpc/grpc-js";
import {
  type CheckRequest,
  type CheckResponse,
  type CheckStreamRequest,
  type CheckStreamResponse,
  GreylistServiceClient,
  type StreamedCheck,
} from "../contract/gen/greyfleet/v1/greylist";
import type { CheckOptions, Decider } from "./decider";
import { type ErrorCode, GreyfleetError } from "./errors";
import { failSpan, type Span, startClientSpan, traceparentOf } from "./tracing";

/** Checks per CheckStreamRequest at most (the contract's limit). */
const MAX_CHECKS_PER_MESSAGE = 256;

/** Channel options: reconnect quickly (grpc-js backs off up to 120 s by default). */
const CHANNEL_OPTIONS = {
  "grpc.initial_reconnect_backoff_ms": 250,
  "grpc.max_reconnect_backoff_ms": 2_000,
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.enable_channelz": 0,
};

interface Pending {
  readonly resolve: (response: CheckResponse) => void;
  readonly reject: (error: GreyfleetError) => void;
  readonly timer: NodeJS.Timeout;
  /** The Check's client span; undefined while tracing is off. */
  readonly span: Span | undefined;
}

const STATUS_CODES: Readonly<Partial<Record<number, ErrorCode>>> = {
  [status.INVALID_ARGUMENT]: "invalid_argument",
  [status.DEADLINE_EXCEEDED]: "deadline_exceeded",
  [status.UNAVAILABLE]: "unavailable",
  [status.RESOURCE_EXHAUSTED]: "unavailable",
};

/** A Decider that asks a decision service at `address` (HOST:PORT). */
export class GrpcDecider implements Decider {
  private readonly client: GreylistServiceClient;
  private stream: ClientDuplexStream<CheckStreamRequest, CheckStreamResponse> | undefined;
  private readonly pending = new Map<number, Pending>();
  private batch: StreamedCheck[] = [];
  private nextId = 1;
  private closed = false;
  /** The last stream broke and no answer has come since: an idle channel is not trusted. */
  private broken = false;
  /** Takes no new checks; closes once those in flight are settled. */
  private retiring = false;

  constructor(
    readonly address: string,
    /** Deadline of a Check when the caller gives none, in ms. */
    private readonly defaultTimeoutMs: number,
    /** TLS (and channel options for it); plaintext by default. */
    transport: { credentials: ChannelCredentials; options: Record<string, string> } = {
      credentials: credentials.createInsecure(),
      options: {},
    },
  ) {
    this.client = new GreylistServiceClient(address, transport.credentials, {
      ...CHANNEL_OPTIONS,
      ...transport.options,
    });
  }

  check(request: CheckRequest, options: CheckOptions = {}): Promise<CheckResponse> {
    if (this.closed || this.retiring) {
      return Promise.reject(new GreyfleetError("unavailable", "decision client is closed"));
    }
    const timeoutMs = Math.max(0, Math.floor((options.deadlineMs ?? Date.now() + this.defaultTimeoutMs) - Date.now()));
    if (timeoutMs === 0) return Promise.reject(new GreyfleetError("deadline_exceeded", "deadline already passed"));
    const id = this.nextId++;
    this.openStream();
    const span = startClientSpan();
    return new Promise<CheckResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        failSpan(span, "deadline_exceeded");
        reject(new GreyfleetError("deadline_exceeded", `no answer from ${this.address} within ${timeoutMs} ms`));
        this.closeIfRetired();
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, span });
      // Checks asked in one turn of the event loop go out in one message.
      const traceparent = traceparentOf(span);
      if (this.batch.push({ id: String(id), check: request, timeoutMs, traceparent }) === 1) {
        setImmediate(() => this.flush());
      }
    });
  }

  /**
   * Whether a check now would find the service: the channel is connected, or idle with no failure
   * since its last answer (an idle channel connects on the first call). Asking also starts a
   * reconnect of a channel that is idle, so a replica that comes back is found without a check
   * failing on it first.
   */
  connected(): boolean {
    const state = this.client.getChannel().getConnectivityState(true);
    return state === connectivityState.READY || (state === connectivityState.IDLE && !this.broken);
  }

  /**
   * Takes no new checks and closes once those in flight are settled (each by its deadline at the
   * latest): a replica dropped from the decision targets while serving answers what it was asked.
   */
  retire(): void {
    this.retiring = true;
    this.closeIfRetired();
  }

  private closeIfRetired(): void {
    if (this.retiring && !this.closed && this.pending.size === 0) this.close();
  }

  /** Closes the stream and the channel; Checks in flight fail with "unavailable". */
  close(): void {
    this.closed = true;
    this.failAll("decision client closed");
    this.stream?.end();
    this.client.close();
  }

  private openStream(): ClientDuplexStream<CheckStreamRequest, CheckStreamResponse> {
    if (this.stream) return this.stream;
    const stream = this.client.checkStream(new Metadata());
    this.stream = stream;
    const gone = (reason: string): void => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.broken = true;
      this.failAll(reason);
    };
    stream.on("data", (message: CheckStreamResponse) => this.settle(message));
    stream.on("error", (error: Error & { code?: number }) =>
      gone(`decision service ${this.address}: ${error.message}`),
    );
    stream.on("end", () => {
      gone(`decision service ${this.address} ended the stream`);
      stream.end();
    });
    return stream;
  }

  /**
   * Sends the waiting checks on the current stream, at most MAX_CHECKS_PER_MESSAGE to a message.
   * Checks that failed meanwhile (their stream broke, or their deadline passed) are not sent;
   * those asked after a break go out on the new stream.
   */
  private flush(): void {
    const checks = this.batch.filter((waiting) => this.pending.has(Number(waiting.id)));
    this.batch = [];
    if (checks.length === 0 || this.closed) return;
    const stream = this.openStream();
    for (let start = 0; start < checks.length; start += MAX_CHECKS_PER_MESSAGE) {
      stream.write({ checks: checks.slice(start, start + MAX_CHECKS_PER_MESSAGE) });
    }
  }

  private settle(message: CheckStreamResponse): void {
    this.broken = false;
    for (const answer of message.answers) {
      const id = Number(answer.id);
      const pending = this.pending.get(id);
      if (!pending) continue; // already timed out
      this.pending.delete(id);
      clearTimeout(pending.timer);
      if (answer.errorCode === 0 && answer.check) {
        pending.span?.end();
        pending.resolve(answer.check);
      } else {
        const code = STATUS_CODES[answer.errorCode] ?? "internal";
        failSpan(pending.span, code);
        pending.reject(new GreyfleetError(code, answer.errorMessage || `status ${answer.errorCode}`));
      }
    }
    this.closeIfRetired();
  }

  private failAll(reason: string): void {
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      failSpan(pending.span, "unavailable");
      pending.reject(new GreyfleetError("unavailable", reason));
      this.pending.delete(id);
    }
    this.closeIfRetired();
  }
}
