/**
 * Validation of a CheckRequest from any peer: bounded lengths (services/shared/check-fields.ts),
 * no control characters, a real IP.
 */

import { type CheckRequest, ProtocolState } from "../contract/gen/greyfleet/v1/greylist";
import { CONTROL_CHARACTER, FIELD_LIMITS_BYTES } from "../shared/check-fields";
import { type IpAddress, parseIp } from "./domain/ip";

/** A request that passed validation, with its client address parsed. */
export interface ValidCheck {
  readonly request: CheckRequest;
  readonly client: IpAddress;
  /** "data" only for PROTOCOL_STATE_DATA; unspecified means RCPT. */
  readonly stage: "rcpt" | "data";
}

/** The first problem found: the field, and a message safe to return to the peer. */
export interface InvalidField {
  readonly field: string;
  readonly message: string;
}

type LimitedField = keyof typeof FIELD_LIMITS_BYTES;

/** Each limited field with its limit and accessor, built once: validation runs on every call. */
const CHECKED_FIELDS: readonly [LimitedField, number, (request: CheckRequest) => string][] = [
  ["client_address", FIELD_LIMITS_BYTES.client_address, (r) => r.clientAddress],
  ["client_name", FIELD_LIMITS_BYTES.client_name, (r) => r.clientName],
  ["helo_name", FIELD_LIMITS_BYTES.helo_name, (r) => r.heloName],
  ["sender", FIELD_LIMITS_BYTES.sender, (r) => r.sender],
  ["recipient", FIELD_LIMITS_BYTES.recipient, (r) => r.recipient],
  ["sasl_username", FIELD_LIMITS_BYTES.sasl_username, (r) => r.saslUsername],
  ["queue_id", FIELD_LIMITS_BYTES.queue_id, (r) => r.queueId],
  ["instance", FIELD_LIMITS_BYTES.instance, (r) => r.instance],
  ["mta_id", FIELD_LIMITS_BYTES.mta_id, (r) => r.mtaId],
];

/** Checks every field; returns the valid request or the first invalid field. */
export function validateCheck(request: CheckRequest): ValidCheck | InvalidField {
  for (const [field, limit, read] of CHECKED_FIELDS) {
    const value = read(request);
    // Byte length is at most 3x the UTF-16 length: only measure when it could exceed.
    if (value.length * 3 > limit && Buffer.byteLength(value, "utf8") > limit) {
      return { field, message: `${field} is longer than ${limit} bytes` };
    }
    if (CONTROL_CHARACTER.test(value)) return { field, message: `${field} contains a control character` };
  }
  if (request.clientAddress === "") return { field: "client_address", message: "client_address is required" };
  const client = parseIp(request.clientAddress);
  if (!client) {
    return {
      field: "client_address",
      message: `client_address ${JSON.stringify(request.clientAddress)} is not an IPv4 or IPv6 address`,
    };
  }
  const state = request.protocolState;
  const stage =
    state === ProtocolState.PROTOCOL_STATE_DATA
      ? "data"
      : state === ProtocolState.PROTOCOL_STATE_RCPT || state === ProtocolState.PROTOCOL_STATE_UNSPECIFIED
        ? "rcpt"
        : undefined;
  if (stage === undefined) {
    return { field: "protocol_state", message: `protocol_state ${String(state)} is not RCPT or DATA` };
  }
  if (stage === "rcpt" && request.recipient === "") {
    return { field: "recipient", message: "recipient is required at RCPT" };
  }
  return { request, client, stage };
}

/** True when validateCheck found a problem. */
export function isInvalid(result: ValidCheck | InvalidField): result is InvalidField {
  return "field" in result;
}
