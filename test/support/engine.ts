/** An engine over a given store with test defaults, a settable clock and its own metrics registry. */
import type { Registry } from "prom-client";
import { CheckRequest, ProtocolState } from "../../services/contract/gen/greyfleet/v1/greylist";
import { Lists } from "../../services/decision/domain/lists";
import { Engine, type EngineOptions } from "../../services/decision/engine";
import { ListsCache } from "../../services/decision/lists-cache";
import type { GreylistStore } from "../../services/decision/store/store";
import { createLogger } from "../../services/shared/logging";
import { createDecisionMetrics, createRegistry } from "../../services/shared/metrics";

/** The documented defaults, in ms. */
export const DEFAULT_POLICY = {
  delayMs: 300_000,
  retryWindowMs: 48 * 3_600_000,
  maxAgeMs: 35 * 86_400_000,
  autoWhitelistPasses: 5,
  autoWhitelistCountIntervalMs: 3_600_000,
};

/** A clock the test moves by hand (epoch ms). */
export class TestClock {
  constructor(public nowMs = Date.UTC(2026, 10, 27, 12, 0, 0)) {}
  readonly now = (): number => this.nowMs;
  advance(ms: number): void {
    this.nowMs += ms;
  }
}

/** Builds an engine; log lines are collected in `lines`. */
export function testEngine(
  store: GreylistStore,
  overrides: Partial<EngineOptions> = {},
): { engine: Engine; registry: Registry; lines: string[] } {
  const registry = createRegistry("test");
  const lines: string[] = [];
  const engine = new Engine({
    store,
    policy: DEFAULT_POLICY,
    grouping: { ipv4PrefixLength: 24, ipv6PrefixLength: 64 },
    lists: new ListsCache(store, [], (error) => {
      throw error;
    }),
    rules: {
      internalNetworks: new Lists([]),
      recipientOptIn: false,
      blacklistAction: "reject",
      greytrapAction: "tempfail",
    },
    mode: "enforce",
    greytrapBlockMs: 86_400_000,
    outboundLearning: true,
    failureMode: "open",
    storeTimeoutMs: 250,
    deferReply: { code: 451, enhancedStatusCode: "4.7.1", text: "Greylisted, please try again later" },
    product: "greyfleet-test",
    hostname: "mx.test",
    failureLogIntervalMs: 60_000,
    metrics: createDecisionMetrics(registry),
    log: createLogger({ level: "info", format: "text" }, (line) => lines.push(line)),
    ...overrides,
  });
  return { engine, registry, lines };
}

/** A RCPT-stage request with overridable fields. */
export function rcpt(fields: Partial<CheckRequest> = {}): CheckRequest {
  return CheckRequest.fromPartial({
    clientAddress: "192.0.2.10",
    clientName: "mail.example.org",
    heloName: "mail.example.org",
    sender: "alice@example.org",
    recipient: "bob@example.com",
    protocolState: ProtocolState.PROTOCOL_STATE_RCPT,
    mtaId: "mx1",
    ...fields,
  });
}

/** The value of one sample of a metric in the registry, or undefined. */
export async function metricValue(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return undefined;
  const { values } = await metric.get();
  const sample = values.find((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l));
  return sample?.value;
}
