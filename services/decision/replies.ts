/** CheckResponse builders: every answer the engine gives is made here. */
import { Action, type CheckResponse, Reason } from "../contract/gen/greyfleet/v1/greylist";

/** An SMTP reply: code, enhanced status code, text. */
export interface SmtpReply {
  readonly code: number;
  readonly enhancedStatusCode: string;
  readonly text: string;
}

/** The reply under the tempfail failure mode. */
export const STORE_UNAVAILABLE_REPLY: SmtpReply = {
  code: 451,
  enhancedStatusCode: "4.3.0",
  text: "Greylisting service temporarily unavailable, please try again later",
};

/** A blocked client (blacklist, greytrap), refused or tempfailed by option. */
export const BLOCKED_REPLIES: Readonly<Record<"reject" | "tempfail", SmtpReply>> = {
  reject: { code: 550, enhancedStatusCode: "5.7.1", text: "Client host rejected: blocked by local policy" },
  tempfail: { code: 451, enhancedStatusCode: "4.7.1", text: "Client host temporarily blocked by local policy" },
};

/** An accept with `reason`; `header` is the X-Greylist value of a message that passed after a delay. */
export function accept(reason: Reason, header = "", delayedSeconds = 0): CheckResponse {
  return {
    action: Action.ACTION_ACCEPT,
    reason,
    retryAfterSeconds: 0,
    smtpCode: 0,
    enhancedStatusCode: "",
    smtpText: "",
    xGreylistHeader: header,
    delayedSeconds,
    shadowAction: Action.ACTION_UNSPECIFIED,
  };
}

/** A deferral (4xx) or, for a 5xx reply, a rejection. */
export function refuse(reason: Reason, reply: SmtpReply, retryAfterSeconds = 0): CheckResponse {
  return {
    action: reply.code >= 500 ? Action.ACTION_REJECT : Action.ACTION_DEFER,
    reason,
    retryAfterSeconds,
    smtpCode: reply.code,
    enhancedStatusCode: reply.enhancedStatusCode,
    smtpText: reply.text,
    xGreylistHeader: "",
    delayedSeconds: 0,
    shadowAction: Action.ACTION_UNSPECIFIED,
  };
}

/** Shadow mode: what enforcement would have done, answered as an accept. */
export function shadowed(response: CheckResponse): CheckResponse {
  if (response.action === Action.ACTION_ACCEPT) return response;
  return { ...response, action: Action.ACTION_ACCEPT, shadowAction: response.action };
}

/** The most common answers, shared: serialising does not change them. */
export const KNOWN_TRIPLET = Object.freeze(accept(Reason.REASON_KNOWN_TRIPLET));
export const CLIENT_AUTO_WHITELISTED = Object.freeze(accept(Reason.REASON_CLIENT_AUTO_WHITELISTED));
