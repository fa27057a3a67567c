/** Waiting for conditions with a bound, for events the test cannot be told about directly. */
import { setTimeout as delay } from "node:timers/promises";

/**
 * Polls `condition` every `everyMs` until it returns a value other than undefined/false, or
 * throws after `timeoutMs` naming `what`. Used for processes coming up, not for greylist time
 * (tests move the store's clock instead of sleeping).
 */
export async function waitFor<T>(
  what: string,
  condition: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 10_000,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const detail = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await delay(everyMs);
  }
}
