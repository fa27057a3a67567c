/**
 * List regexes, matched in linear time. A client chooses its name and a sender its recipients,
 * and a backtracking engine such as V8's can take exponential time on a pattern like
 * ^(.+\.)*example\.com$ or ^(\d|\w)+@ against a crafted name: one such Check would stall every
 * other on the event loop. So list regexes are compiled by RE2 (the `re2` package), whose
 * matching time is linear in the text for every pattern. It takes JavaScript's syntax except
 * what cannot run in linear time: backreferences and lookarounds, refused when an entry is added.
 * A match costs about a microsecond (a call into RE2), so the shipped lists hold no regex.
 */
import RE2 from "re2";

/** What the lists need of a compiled regex. */
export interface ListRegex {
  test(text: string): boolean;
}

/** A list regex (the text between the slashes), compiled to match any case; or why it cannot be. */
export function compileListRegex(pattern: string): { regex: ListRegex } | { error: string } {
  try {
    return { regex: new RE2(pattern, "i") };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return {
      error:
        `regex does not compile: ${reason} (list regexes run in linear time, so ` +
        "backreferences and lookahead/lookbehind are not available)",
    };
  }
}
