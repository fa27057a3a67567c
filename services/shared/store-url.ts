/**
 * Parses --store URLs without opening anything; pure, so configuration loading can use it.
 *
 *   memory:
 *   sqlite:PATH
 *   redis://[user:pass@]host:port[/db]            rediss://… for TLS
 *   redis+sentinel://[user:pass@]host:port,host:port/MASTER[/db]
 *   redis+cluster://[user:pass@]host:port,host:port
 *
 * A password in the URL is accepted but shows on the command line and in `ps`: prefer
 * --store-password-file or GREYFLEET_STORE_PASSWORD.
 */

/** A host and port. */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** What a --store URL names. */
export type StoreTarget =
  | { readonly kind: "memory" }
  | { readonly kind: "sqlite"; readonly path: string }
  | {
      readonly kind: "redis" | "sentinel" | "cluster";
      /** TLS to every node (and to the Sentinels). */
      readonly tls: boolean;
      /** The server, the Sentinels or the Cluster seed nodes. */
      readonly nodes: readonly HostPort[];
      /** Sentinel: the monitored master's name. */
      readonly masterName: string;
      readonly db: number;
      readonly username: string;
      readonly password: string;
    };

const SCHEMES: Readonly<Record<string, { kind: "redis" | "sentinel" | "cluster"; tls: boolean; port: number }>> = {
  "redis:": { kind: "redis", tls: false, port: 6379 },
  "rediss:": { kind: "redis", tls: true, port: 6379 },
  "redis+sentinel:": { kind: "sentinel", tls: false, port: 26379 },
  "rediss+sentinel:": { kind: "sentinel", tls: true, port: 26379 },
  "redis+cluster:": { kind: "cluster", tls: false, port: 6379 },
  "rediss+cluster:": { kind: "cluster", tls: true, port: 6379 },
};

const FORMS =
  "memory:, sqlite:PATH, redis[s]://host:port[/db], redis[s]+sentinel://host:port,…/MASTER[/db], redis[s]+cluster://host:port,…";

function hostPort(text: string, defaultPort: number): HostPort | undefined {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(text);
  if (!match?.[1]) return undefined;
  const port = match[2] === undefined ? defaultPort : Number(match[2]);
  if (port < 1 || port > 65_535) return undefined;
  return { host: match[1].startsWith("[") ? match[1].slice(1, -1) : match[1], port };
}

/** A store URL fit for a message: anything between "//" (or ":/") and an "@" may hold a password. */
export function withoutCredentials(url: string): string {
  return url.replace(/^([^:]*:\/*)[^@/]*@/, "$1…@");
}

/** The target of a store URL, or what is wrong with it. */
export function parseStoreUrl(url: string): StoreTarget | { error: string } {
  if (url === "memory:") return { kind: "memory" };
  if (url.startsWith("sqlite:")) return { kind: "sqlite", path: url.slice("sqlite:".length) };
  const colon = url.indexOf(":");
  const scheme = SCHEMES[url.slice(0, colon + 1)];
  if (!scheme || !url.startsWith("//", colon + 1)) {
    return { error: `"${withoutCredentials(url)}" is not a store URL (${FORMS})` };
  }
  let rest = url.slice(colon + 3);
  let username = "";
  let password = "";
  const at = rest.lastIndexOf("@");
  if (at !== -1) {
    const userinfo = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const split = userinfo.indexOf(":");
    try {
      username = decodeURIComponent(split === -1 ? userinfo : userinfo.slice(0, split));
      password = split === -1 ? "" : decodeURIComponent(userinfo.slice(split + 1));
    } catch {
      return { error: "the user or password in the store URL is not valid %-encoding" };
    }
  }
  if (/[?#]/.test(rest)) return { error: "the store URL has query options, which are not supported" };
  const slash = rest.indexOf("/");
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  const path =
    slash === -1
      ? []
      : rest
          .slice(slash + 1)
          .split("/")
          .filter((part) => part !== "");
  const nodes: HostPort[] = [];
  for (const part of authority.split(",")) {
    const node = hostPort(part, scheme.port);
    if (!node) return { error: `"${part}" in the store URL is not HOST[:PORT]` };
    nodes.push(node);
  }
  if (scheme.kind === "redis" && nodes.length !== 1) return { error: "a redis:// store URL names exactly one server" };
  let masterName = "";
  if (scheme.kind === "sentinel") {
    masterName = path.shift() ?? "";
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(masterName)) {
      return { error: "a redis+sentinel:// store URL needs the master name as its path, e.g. /mymaster" };
    }
  }
  const dbText = path.shift();
  if (path.length > 0 || (dbText !== undefined && !/^\d{1,2}$/.test(dbText))) {
    return { error: "the store URL's path must be a database number, e.g. /0" };
  }
  if (scheme.kind === "cluster" && dbText !== undefined && dbText !== "0") {
    return { error: "Redis Cluster has only database 0" };
  }
  return {
    kind: scheme.kind,
    tls: scheme.tls,
    nodes,
    masterName,
    db: dbText === undefined ? 0 : Number(dbText),
    username,
    password,
  };
}

/** Returns what is wrong with a store URL, or undefined when it is one greyfleet can open. */
export function checkStoreUrl(url: string): string | undefined {
  const target = parseStoreUrl(url);
  return "error" in target ? target.error : undefined;
}

/** The URL with its password replaced by "***", for logs. */
export function redactStoreUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]*:)[^@/]*@/, "$1***@");
}
