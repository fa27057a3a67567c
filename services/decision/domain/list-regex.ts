/**
 * List regexes, matched in bounded time. A client chooses its name and a sender its recipients,
 * and a backtracking engine can take exponential time on a pattern like ^(.+\.)*example\.com$
 * against a crafted name: one such Check would stall every other on the event loop. So:
 * - a pattern must be one V8's linear-time engine can run (no backreferences, no lookarounds):
 *   that is checked when it is compiled, and others are refused;
 * - it is matched by the usual (fast) backtracking engine, which V8 is told to leave for the
 *   linear-time engine once a match has backtracked too often (--regexp-backtracks-before-fallback,
 *   50,000 by default), so no match takes more than a few milliseconds;
 * - that engine has no `i` flag, so a pattern matches case-insensitively by being written in
 *   lower case (escapes kept: \D, \S, \W, \B mean what they say) and matched against
 *   lower-cased text, which every caller passes.
 */
import { setFlagsFromString } from "node:v8";

// Both flags are read when a regex is compiled or run, so setting them here, before any list
// regex is compiled, is enough; they change nothing for a regex that never backtracks that much.
setFlagsFromString("--enable-experimental-regexp-engine");
setFlagsFromString("--enable-experimental-regexp-engine-on-excessive-backtracks");

/** Escapes whose upper-case letter means something else than the lower-case one. */
const CASED_ESCAPES = new Set(["B", "D", "S", "W", "b", "d", "s", "w"]);

/**
 * `pattern` matching lower-cased text as the original matched any case: literal letters in
 * lower case, including those written as \xHH or \uHHHH; class escapes as written.
 */
export function lowerCasePattern(pattern: string): string {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c !== "\\") {
      out += c.toLowerCase();
      continue;
    }
    const next = pattern[i + 1] ?? "";
    const hex = next === "x" ? /^[0-9a-fA-F]{2}/.exec(pattern.slice(i + 2)) : undefined;
    const unicode = next === "u" ? /^[0-9a-fA-F]{4}/.exec(pattern.slice(i + 2)) : undefined;
    const digits = hex?.[0] ?? unicode?.[0];
    if (digits !== undefined) {
      const lower = String.fromCharCode(Number.parseInt(digits, 16)).toLowerCase();
      out += `\\u${(lower.length === 1 ? lower.charCodeAt(0) : Number.parseInt(digits, 16)).toString(16).padStart(4, "0")}`;
      i += 1 + digits.length;
    } else {
      out += `\\${CASED_ESCAPES.has(next) ? next : next.toLowerCase()}`;
      i++;
    }
  }
  return out;
}

/** A list regex compiled for lower-cased text, or why it cannot be used. */
export function compileListRegex(pattern: string): { regex: RegExp } | { error: string } {
  const lower = lowerCasePattern(pattern);
  try {
    new RegExp(lower); // syntax errors, named by the usual engine
  } catch (error) {
    return { error: `regex does not compile: ${error instanceof Error ? error.message : String(error)}` };
  }
  try {
    new RegExp(lower, "l");
  } catch {
    return {
      error:
        "a regex with a backreference or a lookahead/lookbehind cannot be matched in bounded time " +
        "(the names it is matched against come from the client); write it without them",
    };
  }
  return { regex: new RegExp(lower) };
}
