/**
 * Samples the store's counts into gauges at an interval (never per scrape: on Redis a sample
 * is a few hundred commands, a full count a scan of every key).
 */
import { describeError } from "../shared/errors";
import type { Logger } from "../shared/logging";
import type { DecisionMetrics } from "../shared/metrics";
import type { GreylistStore } from "./store/store";

/** Starts sampling now and every `intervalMs`; returns the function that stops it. */
export function startStateSampler(options: {
  store: GreylistStore;
  intervalMs: number;
  autoWhitelistPasses: number;
  metrics: DecisionMetrics;
  log: Logger;
}): () => void {
  const { store, metrics, log } = options;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const sample = async (): Promise<void> => {
    try {
      const stats = await store.sampleStats(options.autoWhitelistPasses);
      metrics.triplets.set({ state: "pending" }, stats.pendingTriplets);
      metrics.triplets.set({ state: "passed" }, stats.passedTriplets);
      metrics.autoWhitelistedClients.set(stats.autoWhitelistedClients);
      metrics.greytrappedNetworks.set(stats.greytrappedNetworks);
      metrics.outboundPairs.set(stats.outboundPairs);
    } catch (error) {
      // The store is down: health and the failure mode report that; the gauges keep their last values.
      log.debug("state sample failed", { error: describeError(error) });
    }
  };
  const loop = (): void => {
    if (stopped) return;
    timer = setTimeout(() => void sample().finally(loop), options.intervalMs);
    timer.unref();
  };
  void sample().finally(loop);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
