/** Structured logging to stderr: one line per event, text (key=value) or JSON. */

/** Severity, least to most. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Values a log field may carry. */
export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>;

/** A logger bound to a component. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
  /** True when a line of `level` would be written (to skip building its fields on hot paths). */
  enabled(level: LogLevel): boolean;
  /** A logger whose lines also carry `component`. */
  child(component: string): Logger;
}

const RANK: Readonly<Record<LogLevel, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

function quote(value: string): string {
  return /^[A-Za-z0-9_.:/@<>+=,-]*$/.test(value) && value !== "" ? value : JSON.stringify(value);
}

/** Creates a logger writing to `write` (stderr by default). */
export function createLogger(
  options: { level: LogLevel; format: "text" | "json"; component?: string },
  write: (line: string) => void = (line) => process.stderr.write(line),
): Logger {
  const threshold = RANK[options.level];
  const emit = (level: LogLevel, message: string, fields: LogFields = {}): void => {
    if (RANK[level] < threshold) return;
    const time = new Date().toISOString();
    const all: Record<string, string | number | boolean> = { time, level };
    if (options.component) all.component = options.component;
    all.msg = message;
    for (const [key, value] of Object.entries(fields)) if (value !== undefined) all[key] = value;
    if (options.format === "json") {
      write(`${JSON.stringify(all)}\n`);
    } else {
      const parts = Object.entries(all).map(([key, value]) => `${key}=${quote(String(value))}`);
      write(`${parts.join(" ")}\n`);
    }
  };
  return {
    debug: (message, fields) => emit("debug", message, fields),
    info: (message, fields) => emit("info", message, fields),
    warn: (message, fields) => emit("warn", message, fields),
    error: (message, fields) => emit("error", message, fields),
    enabled: (level) => RANK[level] >= threshold,
    child: (component) => createLogger({ ...options, component }, write),
  };
}

/** Lets an event through at most once per interval; reports how many were held back. */
export class RateLimitedLog {
  private lastMs = Number.NEGATIVE_INFINITY;
  private suppressed = 0;

  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Calls `log(suppressedSinceLast)` if the interval has passed, else counts the event. */
  maybe(log: (suppressed: number) => void): void {
    const now = this.now();
    if (now - this.lastMs < this.intervalMs) {
      this.suppressed++;
      return;
    }
    log(this.suppressed);
    this.lastMs = now;
    this.suppressed = 0;
  }
}
