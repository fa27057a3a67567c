/** Parsing of human duration strings ("300", "300s", "5m", "48h", "35d", "250ms"); pure. */

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

const DURATION = /^(\d{1,12})(ms|s|m|h|d|w)?$/;

/**
 * Parses a duration into milliseconds. A bare number is read in `bareUnit` ("s" for settings
 * named ...Seconds, "ms" for ...Ms). Returns an error string instead of throwing.
 */
export function parseDurationMs(text: string, bareUnit: "s" | "ms"): number | { error: string } {
  const match = DURATION.exec(text.trim());
  if (!match?.[1]) {
    return { error: `"${text}" is not a duration (examples: 300, 300s, 5m, 48h, 35d, 250ms)` };
  }
  const unit = match[2] ?? bareUnit;
  const ms = Number(match[1]) * (UNIT_MS[unit] ?? 1);
  if (!Number.isSafeInteger(ms)) return { error: `"${text}" is too large` };
  return ms;
}

/** Formats whole seconds compactly for logs and help ("300s" -> "5m", "172800s" -> "2d"). */
export function formatSeconds(seconds: number): string {
  for (const [unit, size] of [
    ["d", 86_400],
    ["h", 3_600],
    ["m", 60],
  ] as const) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}
