/** The X-Greylist header value of a message that passed after a delay; pure. */

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function two(n: number): string {
  return n.toString().padStart(2, "0");
}

/** An RFC 5322 date-time in UTC, e.g. "Fri, 27 Nov 2026 01:39:56 +0000". */
export function formatRfc5322Date(epochMs: number): string {
  const d = new Date(epochMs);
  const time = `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())}`;
  return `${DAYS[d.getUTCDay()]}, ${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${time} +0000`;
}

/** "delayed 312 seconds by greyfleet-0.1.0 at mx1.example.net; Fri, 27 Nov 2026 01:39:56 +0000". */
export function xGreylistValue(delayedSeconds: number, product: string, hostname: string, nowMs: number): string {
  return `delayed ${delayedSeconds} seconds by ${product} at ${hostname}; ${formatRfc5322Date(nowMs)}`;
}
