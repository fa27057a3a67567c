/** Checks --store URLs without opening anything; pure, so configuration loading can use it. */

/** Returns what is wrong with a store URL, or undefined when it is one greyfleet can open. */
export function checkStoreUrl(url: string): string | undefined {
  if (url === "memory:" || url.startsWith("sqlite:")) return undefined;
  if (url.startsWith("rediss://") || url.startsWith("redis+sentinel") || url.startsWith("redis+cluster")) {
    return `"${url.split(":")[0]}:" URLs (TLS, Sentinel, Cluster) are not supported in this version; use redis://host:port`;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `"${url}" is not a store URL (sqlite:PATH, redis://[user:pass@]host:port[/db] or memory:)`;
  }
  if (parsed.protocol !== "redis:") return `"${url}" is not a store URL (sqlite:PATH, redis://host:port or memory:)`;
  if (parsed.hostname === "") return `"${url}" has no host`;
  if (!/^(\/\d{0,2})?$/.test(parsed.pathname)) return `"${url}": the path must be a database number, e.g. /0`;
  if (parsed.search !== "" || parsed.hash !== "") return `"${url}": query options are not supported`;
  return undefined;
}
