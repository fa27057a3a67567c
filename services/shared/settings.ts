/**
 * The one annotated defaults table. Every setting of every greyfleet process is here, with its
 * unit in its name, its flag, its default and what it means. Flags are `--<flag>`, environment
 * variables `GREYFLEET_<FLAG_IN_UPPER_SNAKE>`, YAML keys `<flag>`; precedence flag > env > YAML.
 */
import { parseDurationMs } from "./durations";
import { checkStoreUrl, withoutCredentials } from "./store-url";

/** The greyfleet commands that read settings. */
export type Command = "serve" | "policy" | "milter" | "all";

/** A parsed value or the reason it is invalid. */
type Parsed<T> = T | { error: string };

/** How one setting is read: its flag, default, the commands it applies to, and its parser. */
export interface Setting<T> {
  readonly flag: string;
  /** The default as text (parsed like user input), or per-command defaults. */
  readonly default: string | Readonly<Partial<Record<Command, string>>>;
  readonly commands: readonly Command[];
  readonly doc: string;
  readonly parse: (text: string) => Parsed<T>;
  /** A secret: never taken from a flag (it would show in `ps`), only the environment or the file. */
  readonly secret?: boolean;
}

const SERVICE: readonly Command[] = ["serve", "all"];
const SHIMS: readonly Command[] = ["policy", "milter", "all"];
const EVERY: readonly Command[] = ["serve", "policy", "milter", "all"];

function setting<T>(spec: Setting<T>): Setting<T> {
  return spec;
}

function seconds(min: number, max: number): (text: string) => Parsed<number> {
  return (text) => {
    const ms = parseDurationMs(text, "s");
    if (typeof ms !== "number") return ms;
    if (ms % 1000 !== 0) return { error: `"${text}" is not a whole number of seconds` };
    return inRange(ms / 1000, min, max, "s");
  };
}

function millis(min: number, max: number): (text: string) => Parsed<number> {
  return (text) => {
    const ms = parseDurationMs(text, "ms");
    return typeof ms === "number" ? inRange(ms, min, max, "ms") : ms;
  };
}

function integer(min: number, max: number): (text: string) => Parsed<number> {
  return (text) => {
    if (!/^\d{1,9}$/.test(text.trim())) return { error: `"${text}" is not a whole number` };
    return inRange(Number(text), min, max, "");
  };
}

function inRange(value: number, min: number, max: number, unit: string): Parsed<number> {
  if (value < min || value > max) return { error: `${value}${unit} is outside ${min}${unit}..${max}${unit}` };
  return value;
}

function oneOf<T extends string>(...choices: T[]): (text: string) => Parsed<T> {
  return (text) =>
    (choices as string[]).includes(text) ? (text as T) : { error: `"${text}" is not one of ${choices.join(", ")}` };
}

function text(pattern: RegExp, what: string): (text: string) => Parsed<string> {
  return (value) => (pattern.test(value) ? value : { error: `"${value}" is not ${what}` });
}

/** Like text(), for a secret: the message says what is wrong without quoting the value. */
function secretText(pattern: RegExp, what: string): (text: string) => Parsed<string> {
  return (value) => (pattern.test(value) ? value : { error: `the value (not shown: a secret) is not ${what}` });
}

/** A port number, 0..65535 (leading zeros allowed, as before: 08080 is 8080). */
const PORT = "0*(6553[0-5]|655[0-2]\\d|65[0-4]\\d{2}|6[0-4]\\d{3}|[1-5]\\d{4}|[1-9]\\d{0,3}|0)";
/** HOST:PORT with an IPv4 address, [IPv6] or a name; PORT may be 0 (any free port). */
export const HOST_PORT = new RegExp(`^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]+):${PORT}$`);
const hostPort = text(HOST_PORT, "HOST:PORT (e.g. 127.0.0.1:50051 or [::1]:50051)");
/** What --decision names. */
export type DecisionTargets =
  | { readonly kind: "list"; readonly addresses: readonly string[] }
  | { readonly kind: "dns"; readonly host: string; readonly port: number };

/** Parses --decision: HOST:PORT[,HOST:PORT…] or dns:NAME:PORT. */
export function parseDecisionTargets(value: string): DecisionTargets | { error: string } {
  const dns = new RegExp(`^dns:([A-Za-z0-9.-]{1,253}):${PORT}$`).exec(value);
  if (dns?.[1] && dns[2]) return { kind: "dns", host: dns[1], port: Number(dns[2]) };
  const addresses = value.split(",").map((part) => part.trim());
  const bad = addresses.find((address) => !HOST_PORT.test(address));
  if (bad !== undefined) return { error: `"${bad}" is not HOST:PORT (or use dns:NAME:PORT)` };
  return { kind: "list", addresses };
}

const decisionTargets = (value: string): Parsed<string> => {
  const targets = parseDecisionTargets(value);
  return "error" in targets ? targets : value;
};
const optionalHostPort = (value: string): Parsed<string> => (value === "" ? "" : hostPort(value));
/** A shim's listener: HOST:PORT, or unix:/absolute/path for a unix socket; "" = off (all only). */
const shimListen = (value: string): Parsed<string> =>
  value === "" || /^unix:\/.{1,100}$/.test(value)
    ? value
    : HOST_PORT.test(value)
      ? value
      : { error: `"${value}" is not HOST:PORT or unix:/path` };

/** Every setting, keyed by its name in the parsed configuration. */
export const SETTINGS = {
  logLevel: setting({
    flag: "log-level",
    default: "info",
    commands: EVERY,
    doc: "Least severe log level written to stderr: debug (every decision), info, warn, error.",
    parse: oneOf("debug", "info", "warn", "error"),
  }),
  logFormat: setting({
    flag: "log-format",
    default: "text",
    commands: EVERY,
    doc: "Log line format: text (key=value, one line per event) or json.",
    parse: oneOf("text", "json"),
  }),
  metricsListen: setting({
    flag: "metrics-listen",
    default: { serve: "127.0.0.1:9750", all: "127.0.0.1:9750", policy: "127.0.0.1:9751", milter: "127.0.0.1:9752" },
    commands: EVERY,
    doc: 'HOST:PORT of the Prometheus /metrics endpoint; "" turns it off.',
    parse: optionalHostPort,
  }),
  grpcListen: setting({
    flag: "listen",
    default: "127.0.0.1:50051",
    commands: SERVICE,
    doc: "HOST:PORT of the decision service's gRPC listener (GreylistService, health, reflection).",
    parse: hostPort,
  }),
  maxChecksInFlight: setting({
    flag: "max-checks-in-flight",
    default: "10000",
    commands: SERVICE,
    doc:
      "Checks the gRPC listener decides at once, unary and streamed together; one more is refused at once with " +
      "RESOURCE_EXHAUSTED (its shim applies its failure mode, or asks another replica next).",
    parse: integer(1, 1_000_000),
  }),
  maxCheckStreams: setting({
    flag: "max-check-streams",
    default: "1000",
    commands: SERVICE,
    doc:
      "CheckStreams open at once (a shim process holds one per replica); one more is ended at once with " +
      "RESOURCE_EXHAUSTED.",
    parse: integer(1, 100_000),
  }),
  store: setting({
    flag: "store",
    default: "sqlite:",
    commands: SERVICE,
    doc:
      "Where greylist state lives: sqlite:PATH (embedded, one host; empty PATH = <data-dir>/greyfleet.sqlite), " +
      "redis://[user:pass@]host:port[/db] (the fleet store) or memory: (tests only, lost on exit).",
    parse: (url) => {
      // A stray space (from an environment file) would name another sqlite file: an empty store.
      if (url !== url.trim()) {
        return { error: `${JSON.stringify(withoutCredentials(url.trim()))} has leading or trailing whitespace` };
      }
      const problem = checkStoreUrl(url);
      return problem === undefined ? url : { error: problem };
    },
  }),
  storePasswordFile: setting({
    flag: "store-password-file",
    default: "",
    commands: SERVICE,
    doc: 'File holding the store password (Redis AUTH); "" = none, or GREYFLEET_STORE_PASSWORD, or the URL.',
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  storePassword: setting({
    flag: "store-password",
    default: "",
    commands: SERVICE,
    secret: true,
    doc: "The store password from the environment (GREYFLEET_STORE_PASSWORD) or the YAML file; never a flag.",
    parse: secretText(/^[^\r\n]{0,512}$/, "at most 512 characters on one line"),
  }),
  storeTlsCaFile: setting({
    flag: "store-tls-ca-file",
    default: "",
    commands: SERVICE,
    doc: 'PEM file of the CA that signed the Redis servers\' certificates (rediss://); "" = the system CAs.',
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  storeTlsCertFile: setting({
    flag: "store-tls-cert-file",
    default: "",
    commands: SERVICE,
    doc: 'PEM client certificate for Redis TLS (with --store-tls-key-file); "" = none.',
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  storeTlsKeyFile: setting({
    flag: "store-tls-key-file",
    default: "",
    commands: SERVICE,
    doc: 'PEM private key of --store-tls-cert-file; "" = none.',
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  dataDir: setting({
    flag: "data-dir",
    default: "data",
    commands: SERVICE,
    doc: "Directory for the embedded store when --store is sqlite: without a path; created if missing.",
    parse: text(/^.+$/, "a directory"),
  }),
  greylistDelaySeconds: setting({
    flag: "delay",
    default: "300",
    commands: SERVICE,
    doc: "Seconds a new triplet is deferred; a retry after this passes. 300 s, as postgrey.",
    parse: seconds(1, 86_400),
  }),
  retryWindowSeconds: setting({
    flag: "retry-window",
    default: "48h",
    commands: SERVICE,
    doc: "Seconds after first seen within which a retry passes; later, the triplet starts over.",
    parse: seconds(1, 30 * 86_400),
  }),
  maxAgeSeconds: setting({
    flag: "max-age",
    default: "35d",
    commands: SERVICE,
    doc: "Seconds a passed triplet (and an auto-whitelisted client) is remembered after last use.",
    parse: seconds(60, 3_650 * 86_400),
  }),
  autoWhitelistPasses: setting({
    flag: "awl-passes",
    default: "5",
    commands: SERVICE,
    doc: "Deliveries from a client network after which it is accepted outright; 0 turns the client auto-whitelist off.",
    parse: integer(0, 1_000_000),
  }),
  autoWhitelistCountIntervalSeconds: setting({
    flag: "awl-count-interval",
    default: "1h",
    commands: SERVICE,
    doc: "At most one delivery per client network is counted towards the auto-whitelist in this many seconds.",
    parse: seconds(0, 30 * 86_400),
  }),
  ipv4PrefixLength: setting({
    flag: "ipv4-prefix",
    default: "24",
    commands: SERVICE,
    doc: "IPv4 clients are grouped into networks of this prefix length (bits): retries from a pool pass.",
    parse: integer(8, 32),
  }),
  ipv6PrefixLength: setting({
    flag: "ipv6-prefix",
    default: "64",
    commands: SERVICE,
    doc: "IPv6 clients are grouped into networks of this prefix length (bits).",
    parse: integer(16, 128),
  }),
  failureMode: setting({
    flag: "failure-mode",
    default: "open",
    commands: EVERY,
    doc:
      "When no decision can be made (service: the store is unavailable; shims: the decision service does not " +
      "answer in time): open (accept, counted and logged) or tempfail (defer with 451 4.3.0). Outgoing mail " +
      "(SASL-authenticated) is never deferred by it.",
    parse: oneOf("open", "tempfail"),
  }),
  storeTimeoutMs: setting({
    flag: "store-timeout",
    default: "250ms",
    commands: SERVICE,
    doc: "Milliseconds one store operation may take before the failure mode decides the call.",
    parse: millis(1, 60_000),
  }),
  deferSmtpCode: setting({
    flag: "defer-code",
    default: "451",
    commands: SERVICE,
    doc: "SMTP code of a greylisting deferral (450 or 451).",
    parse: (value) => {
      const code = integer(421, 499)(value);
      return typeof code === "number" && code !== 421 ? code : { error: `"${value}" is not a 4xx code other than 421` };
    },
  }),
  deferEnhancedStatusCode: setting({
    flag: "defer-enhanced-code",
    default: "4.7.1",
    commands: SERVICE,
    doc: "RFC 3463 enhanced status code of a greylisting deferral (4.7.1; 4.2.0 suits old Exchange).",
    parse: text(/^4\.\d{1,3}\.\d{1,3}$/, "an enhanced status code 4.x.y"),
  }),
  deferText: setting({
    flag: "defer-text",
    default: "Greylisted, please try again later",
    commands: SERVICE,
    doc: "Text of a greylisting deferral; printable ASCII, at most 200 characters.",
    parse: text(/^[\x20-\x7e]{1,200}$/, "1-200 printable ASCII characters"),
  }),
  headerHostname: setting({
    flag: "hostname",
    default: "",
    commands: SERVICE,
    doc: 'Host name written in the X-Greylist header; "" = the machine\'s host name.',
    parse: text(/^[A-Za-z0-9.-]{0,253}$/, "a host name"),
  }),
  redisKeyPrefix: setting({
    flag: "redis-key-prefix",
    default: "gf:",
    commands: SERVICE,
    doc: "Prefix of every Redis key (to share one Redis between deployments or tests).",
    parse: text(/^[A-Za-z0-9:_.-]{0,32}$/, "at most 32 characters of A-Z a-z 0-9 : _ . -"),
  }),
  healthIntervalMs: setting({
    flag: "health-interval",
    default: "1s",
    commands: SERVICE,
    doc: "Milliseconds between store health probes; gRPC health is NOT_SERVING while the store is down.",
    parse: millis(50, 60_000),
  }),
  failureLogIntervalSeconds: setting({
    flag: "failure-log-interval",
    default: "60s",
    commands: EVERY,
    doc: "A failure-mode activation is logged at most once in this many seconds (all are counted).",
    parse: seconds(1, 86_400),
  }),
  mode: setting({
    flag: "mode",
    default: "enforce",
    commands: SERVICE,
    doc:
      "enforce: answer as decided; shadow: compute, record and count every decision as usual but always " +
      "accept (the reason says what enforcement would have done), to measure the impact first.",
    parse: oneOf("enforce", "shadow"),
  }),
  blacklistAction: setting({
    flag: "blacklist-action",
    default: "reject",
    commands: SERVICE,
    doc: "What a blacklisted client gets: reject (550 5.7.1) or tempfail (451 4.7.1).",
    parse: oneOf("reject", "tempfail"),
  }),
  greytrapAction: setting({
    flag: "greytrap-action",
    default: "tempfail",
    commands: SERVICE,
    doc: "What a greytrapped network gets, from the trap hit on: reject (550 5.7.1) or tempfail (451 4.7.1).",
    parse: oneOf("reject", "tempfail"),
  }),
  greytrapBlockSeconds: setting({
    flag: "greytrap-block",
    default: "24h",
    commands: SERVICE,
    doc: "Seconds a greytrap hit blocks the client's network across the fleet.",
    parse: seconds(60, 365 * 86_400),
  }),
  internalNetworks: setting({
    flag: "internal-networks",
    default: "",
    commands: SERVICE,
    doc:
      "Comma-separated addresses/CIDRs of local clients: their mail is outgoing (never greylisted, reply pairs " +
      'learned). "" = none (SASL-authenticated clients are outgoing anyway).',
    parse: (value) => {
      const items = value
        .split(",")
        .map((item) => item.trim())
        .filter((item) => item !== "");
      const bad = items.find((item) => !/^[0-9A-Fa-f:.]+(\/\d{1,3})?$/.test(item));
      return bad === undefined ? items.join(",") : { error: `"${bad}" is not an address or CIDR` };
    },
  }),
  recipientOptIn: setting({
    flag: "recipient-opt-in",
    default: "off",
    commands: SERVICE,
    doc: "on: only recipients on the recipient_opt_in list are greylisted; off: everyone not opted out.",
    parse: oneOf("on", "off"),
  }),
  defaultWhitelist: setting({
    flag: "default-whitelist",
    default: "on",
    commands: SERVICE,
    doc: "on: apply the shipped whitelist of large sender pools (lists/default-whitelist.txt); off: do not.",
    parse: oneOf("on", "off"),
  }),
  outboundLearning: setting({
    flag: "outbound-learning",
    default: "on",
    commands: SERVICE,
    doc: "on: remember who local users write to, and accept their replies at once; off: do not.",
    parse: oneOf("on", "off"),
  }),
  listsRefreshMs: setting({
    flag: "lists-refresh",
    default: "1s",
    commands: SERVICE,
    doc: "Milliseconds between checks for list changes made through any decision process (applied within this).",
    parse: millis(100, 60_000),
  }),
  stateSampleIntervalMs: setting({
    flag: "state-sample-interval",
    default: "60s",
    commands: SERVICE,
    doc: "Milliseconds between samples of the store's counts for metrics (estimated from 200 random keys on Redis).",
    parse: millis(1_000, 3_600_000),
  }),
  tlsCertFile: setting({
    flag: "tls-cert-file",
    default: "",
    commands: SERVICE,
    doc: 'PEM certificate of the gRPC listener (TLS); "" = plaintext (keep --listen on loopback then).',
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  tlsKeyFile: setting({
    flag: "tls-key-file",
    default: "",
    commands: SERVICE,
    doc: "PEM private key of --tls-cert-file.",
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  tlsClientCaFile: setting({
    flag: "tls-client-ca-file",
    default: "",
    commands: SERVICE,
    doc: "PEM CA of client certificates: when set, every client (shim, admin) must present one (mTLS).",
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  adminClientNames: setting({
    flag: "admin-client-names",
    default: "",
    commands: SERVICE,
    doc:
      "Comma-separated client certificate names (subject CN or DNS name) allowed to call AdminService. With no " +
      "admin name and no admin token configured, only loopback callers may.",
    parse: text(/^[A-Za-z0-9*._,-]{0,1000}$/, "comma-separated certificate names"),
  }),
  adminTokenFile: setting({
    flag: "admin-token-file",
    default: "",
    commands: SERVICE,
    doc: 'File holding the bearer token that grants AdminService (or GREYFLEET_ADMIN_TOKEN); "" = none.',
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  adminToken: setting({
    flag: "admin-token",
    default: "",
    commands: SERVICE,
    secret: true,
    doc: "The admin bearer token from the environment (GREYFLEET_ADMIN_TOKEN) or the YAML file; never a flag.",
    parse: secretText(/^[\x21-\x7e]{0,512}$/, "at most 512 printable characters without spaces"),
  }),
  decisionTlsCaFile: setting({
    flag: "decision-tls-ca-file",
    default: "",
    commands: ["policy", "milter"],
    doc: 'PEM CA of the decision service\'s certificate: TLS to --decision; "" = plaintext.',
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  decisionTlsCertFile: setting({
    flag: "decision-tls-cert-file",
    default: "",
    commands: ["policy", "milter"],
    doc: "PEM client certificate the shim presents to the decision service (mTLS).",
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  decisionTlsKeyFile: setting({
    flag: "decision-tls-key-file",
    default: "",
    commands: ["policy", "milter"],
    doc: "PEM private key of --decision-tls-cert-file.",
    parse: text(/^(\/.*)?$/, "an absolute path"),
  }),
  decisionTlsServerName: setting({
    flag: "decision-tls-server-name",
    default: "",
    commands: ["policy", "milter"],
    doc: "Name to verify in the decision service's certificate when it differs from --decision's host; \"\" = the host.",
    parse: text(/^[A-Za-z0-9.-]{0,253}$/, "a host name"),
  }),
  tlsReloadMs: setting({
    flag: "tls-reload-interval",
    default: "60s",
    commands: EVERY,
    doc: "Milliseconds between re-reads of the TLS certificate files: a renewed certificate is used without a restart.",
    parse: millis(1_000, 86_400_000),
  }),
  decisionAddress: setting({
    flag: "decision",
    default: "127.0.0.1:50051",
    commands: ["policy", "milter"],
    doc:
      "The decision service the shim asks: HOST:PORT, several (HOST:PORT,HOST:PORT: checks go round robin, " +
      "a failing replica is left out for 1 s doubling to 30 s), or dns:NAME:PORT (every address NAME resolves " +
      "to, re-resolved every 10 s: a headless Service). One long-lived gRPC stream per replica.",
    parse: decisionTargets,
  }),
  decisionTimeoutMs: setting({
    flag: "decision-timeout",
    default: "500ms",
    commands: SHIMS,
    doc:
      "Milliseconds a shim waits for a decision before its failure mode answers; well under Postfix's " +
      "policy (100 s) and milter (30 s) timeouts.",
    parse: millis(10, 20_000),
  }),
  mtaId: setting({
    flag: "mta-id",
    default: "",
    commands: SHIMS,
    doc: "Name of this MX host in the decision service's logs; \"\" = the machine's host name.",
    parse: text(/^[A-Za-z0-9._-]{0,64}$/, "at most 64 characters of A-Z a-z 0-9 . _ -"),
  }),
  policyListen: setting({
    flag: "policy-listen",
    default: "127.0.0.1:10023",
    commands: ["policy", "all"],
    doc: 'Postfix policy listener: HOST:PORT or unix:/path ("greyfleet policy --listen" too); "" turns it off in all.',
    parse: shimListen,
  }),
  policyDeferReply: setting({
    flag: "policy-defer-reply",
    default: "defer_if_permit",
    commands: ["policy", "all"],
    doc:
      "How the policy shim defers: defer_if_permit (action=DEFER_IF_PERMIT <text>, Postfix answers 450 4.7.1) " +
      "or smtp (action=451 4.7.1 <text>, the decision service's code verbatim).",
    parse: oneOf("defer_if_permit", "smtp"),
  }),
  policyIdleTimeoutMs: setting({
    flag: "policy-idle-timeout",
    default: "10m",
    commands: ["policy", "all"],
    doc: "A policy connection idle this long is closed (Postfix reconnects; its own limit is 300 s).",
    parse: millis(1_000, 86_400_000),
  }),
  milterListen: setting({
    flag: "milter-listen",
    default: "127.0.0.1:10030",
    commands: ["milter", "all"],
    doc: 'Milter listener: HOST:PORT or unix:/path ("greyfleet milter --listen" too); "" turns it off in all.',
    parse: shimListen,
  }),
  milterIdleTimeoutMs: setting({
    flag: "milter-idle-timeout",
    default: "10m",
    commands: ["milter", "all"],
    doc: "A milter connection that sends nothing for this long is closed (between DATA and the end of the message, while the client uploads it, 1 h).",
    parse: millis(1_000, 86_400_000),
  }),
  shutdownGraceMs: setting({
    flag: "shutdown-grace",
    default: "10s",
    commands: EVERY,
    doc: "On SIGTERM, milliseconds in-flight work may take to finish before the process exits anyway.",
    parse: millis(100, 600_000),
  }),
} as const;

/** The name of a setting. */
export type SettingName = keyof typeof SETTINGS;

/** The parsed configuration: every setting with its typed value. */
export type Config = {
  readonly [K in SettingName]: (typeof SETTINGS)[K] extends Setting<infer T> ? T : never;
};
