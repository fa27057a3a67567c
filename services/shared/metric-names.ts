/**
 * Every metric name greyfleet exports. The Grafana dashboard and the Prometheus alert rules in
 * deploy/ use exactly these names; labels are of bounded cardinality (never an address).
 */

/** Decisions made by the engine; labels: action, reason. */
export const DECISIONS_TOTAL = "greyfleet_decisions_total";
/** Engine decision latency in seconds, store call included; sub-millisecond buckets. */
export const DECISION_DURATION_SECONDS = "greyfleet_decision_duration_seconds";
/** Store operation latency in seconds; labels: store, operation. */
export const STORE_OPERATION_DURATION_SECONDS = "greyfleet_store_operation_duration_seconds";
/** Store operations that failed or timed out; labels: store, operation, kind (error|timeout). */
export const STORE_ERRORS_TOTAL = "greyfleet_store_errors_total";
/** 1 while the last store health probe succeeded, else 0; label: store. */
export const STORE_UP = "greyfleet_store_up";
/** Decisions made by the failure mode instead of the store; label: mode (open|tempfail). */
export const FAILURE_MODE_ACTIVATIONS_TOTAL = "greyfleet_failure_mode_activations_total";
/** Check calls refused as invalid, by field. */
export const INVALID_REQUESTS_TOTAL = "greyfleet_invalid_requests_total";
/** Decisions settled by a list, by list kind. */
export const LIST_HITS_TOTAL = "greyfleet_list_hits_total";
/** List entries in force, by list kind (store entries plus the default whitelist). */
export const LIST_ENTRIES = "greyfleet_list_entries";
/** Triplets in the store by state (pending|passed), sampled every --state-sample-interval (estimated on Redis). */
export const TRIPLETS = "greyfleet_triplets";
/** Client networks auto-whitelisted, sampled like TRIPLETS. */
export const AUTO_WHITELISTED_CLIENTS = "greyfleet_auto_whitelisted_clients";
/** Client networks blocked by a greytrap, sampled like TRIPLETS. */
export const GREYTRAPPED_NETWORKS = "greyfleet_greytrapped_networks";
/** Outbound pairs remembered, sampled like TRIPLETS. */
export const OUTBOUND_PAIRS = "greyfleet_outbound_pairs";
/** CheckStreams open now (one per shim process and replica). */
export const CHECK_STREAMS_OPEN = "greyfleet_check_streams_open";
/** Checks and CheckStreams refused because a limit was reached; label: limit (checks_in_flight|check_streams). */
export const OVERLOAD_REFUSALS_TOTAL = "greyfleet_overload_refusals_total";
/** Always 1; labels: mode (enforce|shadow), failure_mode (open|tempfail): how the service is set to decide. */
export const CONFIG_INFO = "greyfleet_config_info";
/** Always 1; labels: version, command. */
export const BUILD_INFO = "greyfleet_build_info";

/** Histogram buckets in seconds for decision and store latency (50 us .. 1 s). */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

/** Shims: connections accepted from the MTA; label shim (policy|milter). */
export const SHIM_CONNECTIONS_TOTAL = "greyfleet_shim_connections_total";
/** Shims: connections from the MTA open now; label shim. */
export const SHIM_OPEN_CONNECTIONS = "greyfleet_shim_open_connections";
/** Shims: requests (policy) or recipients (milter) answered; labels shim, stage, action. */
export const SHIM_REQUESTS_TOTAL = "greyfleet_shim_requests_total";
/** Shims: MTA protocol errors that closed a connection; labels shim, code. */
export const SHIM_PROTOCOL_ERRORS_TOTAL = "greyfleet_shim_protocol_errors_total";
/** Shims: time to get a decision in seconds; label shim. */
export const SHIM_DECISION_CALL_DURATION_SECONDS = "greyfleet_shim_decision_call_duration_seconds";
/** Shims: decisions made by the shim's failure mode; labels shim, mode, cause. */
export const SHIM_FAILURE_MODE_ACTIVATIONS_TOTAL = "greyfleet_shim_failure_mode_activations_total";
