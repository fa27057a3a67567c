/**
 * The one error type that crosses a boundary. Its code says what the peer is told; the message
 * is safe to show the peer; the original failure, if any, stays in `cause` for the log.
 */

/** Wire meaning of a failure, mapped to a gRPC status or a shim reply at each boundary. */
export type ErrorCode = "invalid_argument" | "unavailable" | "deadline_exceeded" | "internal";

/** A failure with a peer-facing code and message. */
export class GreyfleetError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "GreyfleetError";
    this.code = code;
  }

  /** Wraps anything thrown into a GreyfleetError; an unknown throw becomes "internal". */
  static from(error: unknown): GreyfleetError {
    if (error instanceof GreyfleetError) return error;
    return new GreyfleetError("internal", "internal error", { cause: error });
  }
}

/**
 * A setting whose value cannot work, found only when start-up uses it (a certificate without its
 * key, an empty token file, a bad --internal-networks entry): start-up stops with exit 2, as for
 * a setting refused when the configuration is read. A file or port that cannot be used is not
 * one of these (exit 1).
 */
export class SettingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SettingError";
  }
}

/** The message of anything thrown, for logs. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause === undefined ? "" : ` (cause: ${describeError(error.cause)})`;
    return `${error.message}${cause}`;
  }
  return String(error);
}
