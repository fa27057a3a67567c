/** Process lifecycle: on SIGTERM or SIGINT stop accepting, finish in-flight work, exit 0. */
import { describeError } from "./errors";
import type { Logger } from "./logging";

/** One part of the process to stop, in order, on shutdown. */
export interface Stoppable {
  readonly name: string;
  /** Stops accepting, waits for in-flight work; `graceMs` is the time left. */
  stop(graceMs: number): Promise<void>;
}

/**
 * Stops `parts` in order on the first SIGTERM/SIGINT and exits 0 (1 if a part failed or the
 * grace period ran out). A second signal exits at once with 1.
 */
export function stopOnSignals(parts: readonly Stoppable[], graceMs: number, log: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn("second signal: exiting now", { signal });
      process.exit(1);
    }
    stopping = true;
    log.info("shutting down", { signal, grace_ms: graceMs });
    const deadline = Date.now() + graceMs;
    const force = setTimeout(() => {
      log.error("grace period over: exiting with work in flight", { grace_ms: graceMs });
      process.exit(1);
    }, graceMs);
    force.unref();
    void (async () => {
      let failed = false;
      for (const part of parts) {
        try {
          await part.stop(Math.max(0, deadline - Date.now()));
        } catch (error) {
          failed = true;
          log.error("stop failed", { part: part.name, error: describeError(error) });
        }
      }
      log.info("stopped");
      process.exit(failed ? 1 : 0);
    })();
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}
