/**
 * The bounds of a CheckRequest's text fields, shared by the service (which refuses what breaks
 * them) and the shims (which make what an MTA sent fit them, so that odd but accepted SMTP input
 * is greylisted like any other instead of being refused and let through by a failure mode).
 */
import type { CheckRequest } from "../contract/gen/greyfleet/v1/greylist";

/** Longest accepted value of each string field, in UTF-8 bytes. */
export const FIELD_LIMITS_BYTES = {
  client_address: 64,
  client_name: 255,
  helo_name: 255,
  sender: 320,
  recipient: 320,
  sasl_username: 255,
  queue_id: 64,
  instance: 64,
  mta_id: 64,
} as const;

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
export const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it replaces
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/g;

/** The text fields a shim fills from what the MTA sent, with their limits. */
const MTA_FIELDS = [
  ["clientName", FIELD_LIMITS_BYTES.client_name],
  ["heloName", FIELD_LIMITS_BYTES.helo_name],
  ["sender", FIELD_LIMITS_BYTES.sender],
  ["recipient", FIELD_LIMITS_BYTES.recipient],
  ["saslUsername", FIELD_LIMITS_BYTES.sasl_username],
  ["queueId", FIELD_LIMITS_BYTES.queue_id],
  ["instance", FIELD_LIMITS_BYTES.instance],
] as const;

/**
 * `request` with every field an MTA filled made acceptable to the service: control characters
 * replaced by "?" (as Postfix shows them in its logs) and values cut to their limit on a
 * character boundary. The same input always gives the same result, so a retry keys the same
 * triplet. The client address is left as it is: a wrong one is a wrong request.
 */
export function fitForCheck(request: CheckRequest): CheckRequest {
  let fitted: CheckRequest | undefined;
  for (const [field, limit] of MTA_FIELDS) {
    const value = request[field];
    const tooLong = value.length * 3 > limit && Buffer.byteLength(value, "utf8") > limit;
    if (!tooLong && !CONTROL_CHARACTER.test(value)) continue;
    fitted ??= { ...request };
    fitted[field] = cut(value.replace(CONTROL_CHARACTERS, "?"), limit);
  }
  return fitted ?? request;
}

/** `value` cut to at most `limit` UTF-8 bytes, whole characters only. */
function cut(value: string, limit: number): string {
  let bytes = 0;
  let end = 0;
  for (const character of value) {
    bytes += Buffer.byteLength(character, "utf8");
    if (bytes > limit) break;
    end += character.length;
  }
  return value.slice(0, end);
}
