/**
 * The static rules, applied before the store is asked: the blacklist and greytraps first, then
 * outgoing mail (learned, never greylisted), then the whitelists, then the stage rules of the
 * null sender. Pure: the lists and the clock reading are given.
 */
import { type CheckResponse, Reason } from "../contract/gen/greyfleet/v1/greylist";
import type { IpAddress } from "./domain/ip";
import type { ListKindName, Lists } from "./domain/lists";
import { normaliseRecipient, normaliseSender } from "./domain/normalise";
import { accept, BLOCKED_REPLIES, refuse } from "./replies";
import type { OutboundPair } from "./store/store";
import type { ValidCheck } from "./validate";

/** How the rules are configured. */
export interface RuleSettings {
  /** Clients whose mail is outgoing (as a client_whitelist-kind matcher). */
  readonly internalNetworks: Lists;
  /** Only recipients on the opt-in list are greylisted. */
  readonly recipientOptIn: boolean;
  readonly blacklistAction: "reject" | "tempfail";
  readonly greytrapAction: "reject" | "tempfail";
}

/** What the rules decided. */
export type RuleVerdict =
  /** Answered without the store; `list` names the list that matched, if one did. */
  | { readonly kind: "answer"; readonly response: CheckResponse; readonly list?: ListKindName }
  /** A greytrap: block the client's network, then answer. */
  | { readonly kind: "greytrap"; readonly response: CheckResponse }
  /** Outgoing mail: learn the reply pair, then answer. */
  | { readonly kind: "outbound"; readonly response: CheckResponse; readonly pairs: readonly OutboundPair[] }
  /** Nothing static applies: ask the store. */
  | { readonly kind: "greylist" };

const answer = (response: CheckResponse, list?: ListKindName): RuleVerdict =>
  list === undefined ? { kind: "answer", response } : { kind: "answer", response, list };

/** Applies the static rules to a valid request. */
export function applyRules(valid: ValidCheck, lists: Lists, settings: RuleSettings, nowMs: number): RuleVerdict {
  const { request, client, stage } = valid;
  if (lists.client("client_blacklist", client, nowMs)) {
    return answer(
      refuse(Reason.REASON_CLIENT_BLACKLISTED, BLOCKED_REPLIES[settings.blacklistAction]),
      "client_blacklist",
    );
  }
  // A bounce to a trap address is backscatter from a real MTA (the trap was forged as a sender):
  // only mail with a sender springs a greytrap.
  const nullSender = request.sender === "" || request.sender === "<>";
  if (stage === "rcpt" && !nullSender && lists.recipient("greytrap", request.recipient, nowMs)) {
    return { kind: "greytrap", response: refuse(Reason.REASON_GREYTRAP_HIT, BLOCKED_REPLIES[settings.greytrapAction]) };
  }
  const authenticated = request.saslUsername !== "";
  if (authenticated || isInternal(settings.internalNetworks, client, nowMs)) {
    const reason = authenticated ? Reason.REASON_AUTHENTICATED_CLIENT : Reason.REASON_INTERNAL_CLIENT;
    const pairs =
      stage === "rcpt" && request.sender !== "" && request.recipient !== ""
        ? [{ local: normaliseRecipient(request.sender), external: normaliseSender(request.recipient) }]
        : [];
    return { kind: "outbound", response: accept(reason), pairs };
  }
  if (lists.client("client_whitelist", client, nowMs)) {
    return answer(accept(Reason.REASON_CLIENT_WHITELISTED), "client_whitelist");
  }
  if (lists.clientName(request.clientName, nowMs)) {
    return answer(accept(Reason.REASON_CLIENT_NAME_WHITELISTED), "client_name_whitelist");
  }
  if (lists.sender(request.sender, nowMs)) {
    return answer(accept(Reason.REASON_SENDER_WHITELISTED), "sender_whitelist");
  }
  if (request.recipient !== "") {
    if (lists.recipient("recipient_opt_out", request.recipient, nowMs)) {
      return answer(accept(Reason.REASON_RECIPIENT_OPTED_OUT), "recipient_opt_out");
    }
    if (settings.recipientOptIn && !lists.recipient("recipient_opt_in", request.recipient, nowMs)) {
      return answer(accept(Reason.REASON_RECIPIENT_NOT_OPTED_IN));
    }
  }
  if (stage === "rcpt" && nullSender) return answer(accept(Reason.REASON_NULL_SENDER_DEFERRED_TO_DATA));
  if (stage === "data" && !nullSender) return answer(accept(Reason.REASON_NOT_GREYLISTED_AT_STAGE));
  return { kind: "greylist" };
}

function isInternal(internal: Lists, client: IpAddress, nowMs: number): boolean {
  return internal.client("client_whitelist", client, nowMs) !== undefined;
}
