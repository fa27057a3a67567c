/**
 * Starting several things a test owns at once. With Promise.all, a start that fails leaves the
 * ones that did start unknown to the test: nothing stops them, and they outlive it.
 */

/** Anything a test starts and must stop. */
export interface Stoppable {
  stop(): Promise<unknown>;
}

/**
 * Awaits every start. If any failed, stops the ones that started and rethrows the first failure;
 * otherwise resolves with all of them, in order.
 */
export async function startAll<T extends readonly Promise<Stoppable>[]>(
  starts: readonly [...T],
): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> {
  const settled = await Promise.allSettled(starts);
  const failure = settled.find((result): result is PromiseRejectedResult => result.status === "rejected");
  if (failure) {
    await Promise.allSettled(
      settled.map((result) => (result.status === "fulfilled" ? result.value.stop() : undefined)),
    );
    throw failure.reason;
  }
  return settled.map((result) => (result as PromiseFulfilledResult<Stoppable>).value) as {
    -readonly [K in keyof T]: Awaited<T[K]>;
  };
}
