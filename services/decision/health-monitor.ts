/**
 * Probes the store at an interval and reports its health: gRPC health NOT_SERVING and
 * greyfleet_store_up 0 while it does not answer, logged on each change.
 */
import { describeError } from "../shared/errors";
import type { Logger } from "../shared/logging";
import type { DecisionMetrics } from "../shared/metrics";
import type { GreylistStore } from "./store/store";

/** A running health monitor. */
export interface HealthMonitor {
  /** Probes now; resolves with the new state. */
  probe(): Promise<boolean>;
  stop(): void;
}

/** Starts probing every `intervalMs`; each probe may take `timeoutMs`. */
export function startHealthMonitor(options: {
  store: GreylistStore;
  intervalMs: number;
  timeoutMs: number;
  onChange: (up: boolean) => void;
  metrics: DecisionMetrics;
  log: Logger;
}): HealthMonitor {
  const { store, metrics, log } = options;
  let up: boolean | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  const probe = async (): Promise<boolean> => {
    let error: unknown;
    let guard: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        store.ping(),
        new Promise((_, reject) => {
          guard = setTimeout(() => reject(new Error(`no answer within ${options.timeoutMs} ms`)), options.timeoutMs);
        }),
      ]);
    } catch (thrown) {
      error = thrown;
    } finally {
      clearTimeout(guard);
    }
    const nowUp = error === undefined;
    metrics.storeUp.set({ store: store.kind }, nowUp ? 1 : 0);
    if (nowUp !== up) {
      if (nowUp) log.info("store is up", { store: store.kind });
      else log.warn("store is down", { store: store.kind, error: describeError(error) });
      up = nowUp;
      options.onChange(nowUp);
    }
    return nowUp;
  };

  const loop = (): void => {
    timer = setTimeout(() => {
      void probe().finally(() => {
        if (!stopped) loop();
      });
    }, options.intervalMs);
    timer.unref();
  };
  loop();
  return {
    probe,
    stop(): void {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
