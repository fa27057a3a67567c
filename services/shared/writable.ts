/**
 * Waiting until a stream takes writes again. A destroyed or failed stream never emits "drain", so
 * a writer waiting for "drain" alone would wait for ever (and hold whatever it holds meanwhile):
 * this settles on whichever comes first of drain, close, error or a gRPC call's cancelled. The
 * writer then checks whether the stream is still open before it writes on.
 */
import type { EventEmitter } from "node:events";

const ENDINGS = ["drain", "close", "error", "cancelled"] as const;

export function writableAgain(stream: EventEmitter): Promise<void> {
  return new Promise((resolve) => {
    const settle = (): void => {
      for (const event of ENDINGS) stream.off(event, settle);
      resolve();
    };
    for (const event of ENDINGS) stream.once(event, settle);
  });
}
