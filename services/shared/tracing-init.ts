/**
 * Starts the OpenTelemetry SDK for a long-running command when tracing.ts's settings say so:
 * a tracer provider (sampler from OTEL_TRACES_SAMPLER, ParentBased(AlwaysOn) by default), a batch
 * processor (OTEL_BSP_*) and an OTLP/HTTP exporter (OTEL_EXPORTER_OTLP_*), the W3C trace-context
 * propagator and a synchronous context manager. Loaded only when tracing is on, so the SDK costs
 * nothing otherwise. The SDK's own complaints (an unreachable collector) go to the log, at most
 * once a minute.
 *
 * Why not AsyncLocalStorage: greyfleet hands a span's context over synchronously only (a shim's
 * span to Decider.check, the service's span to Engine.check, which starts the store span before
 * its first await), and on Node 20 an AsyncLocalStorage context manager puts a hook on every
 * promise of the process: in bench/tracing-overhead.ts it added another 10 to 30% CPU per decision.
 * The tracing tests check that every span has its parent, so a new await before a span starts
 * cannot go unnoticed.
 */
import { hostname } from "node:os";
import { context, DiagLogLevel, diag, propagation, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter as JsonExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPTraceExporter as ProtobufExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, detectResources, envDetector, resourceFromAttributes } from "@opentelemetry/resources";
import { StackContextManager } from "@opentelemetry/sdk-trace";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  SimpleSpanProcessor,
  type SpanExporter,
} from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { type Logger, RateLimitedLog } from "./logging";
import { TRACER_NAME, type TracingSettings, useTracer } from "./tracing";
import { PRODUCT_VERSION } from "./version";

/** How often the SDK's warnings reach the log at most, ms. */
const DIAG_LOG_INTERVAL_MS = 60_000;
/** The SDK's messages (a stringified error with its stack) are cut to this length in the log. */
const MAX_DIAG_MESSAGE_CHARS = 500;

/** Running tracing. */
export interface Tracing {
  /** Exports the spans still queued (bounded by `graceMs`) and stops making spans. */
  shutdown(graceMs: number): Promise<void>;
}

/** How to start tracing; a test may give its own exporter, exported span by span. */
export interface TracingOptions {
  readonly settings: Extract<TracingSettings, { enabled: true }>;
  readonly log: Logger;
  /** Replaces the OTLP exporter and the batch processor (tests: an InMemorySpanExporter). */
  readonly exporter?: SpanExporter;
}

/** Registers the SDK globally and hands greyfleet's tracer to tracing.ts. */
export function startTracing(options: TracingOptions): Tracing {
  const { settings, log } = options;
  const diagLog = new RateLimitedLog(DIAG_LOG_INTERVAL_MS);
  const complain = (message: string) =>
    diagLog.maybe((suppressed) =>
      log.warn("tracing: the OpenTelemetry SDK reports a problem", {
        error: message.slice(0, MAX_DIAG_MESSAGE_CHARS),
        suppressed_since_last: suppressed,
      }),
    );
  diag.setLogger(
    {
      error: complain,
      warn: complain,
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    DiagLogLevel.WARN,
  );
  const resource = defaultResource()
    .merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: settings.serviceName,
        [ATTR_SERVICE_VERSION]: PRODUCT_VERSION,
        "host.name": hostname(),
      }),
    )
    .merge(detectResources({ detectors: [envDetector] }));
  const processor = options.exporter
    ? new SimpleSpanProcessor(options.exporter)
    : new BatchSpanProcessor(settings.protocol === "http/json" ? new JsonExporter() : new ProtobufExporter());
  const provider = new BasicTracerProvider({ resource, spanProcessors: [processor] });
  context.setGlobalContextManager(new StackContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  useTracer(provider.getTracer(TRACER_NAME, PRODUCT_VERSION));
  log.info("tracing on", { protocol: settings.protocol, service: settings.serviceName });
  return {
    shutdown: async (graceMs) => {
      useTracer(undefined);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          log.warn("tracing: spans still queued at shutdown were dropped", { grace_ms: graceMs });
          resolve();
        }, graceMs);
      });
      try {
        await Promise.race([provider.shutdown(), timedOut]);
      } finally {
        clearTimeout(timer);
        trace.disable();
        propagation.disable();
        context.disable();
        diag.disable();
      }
    },
  };
}
