import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Action, type CheckResponse, Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { toReply } from "../../services/policy/server";

function response(fields: Partial<CheckResponse>): CheckResponse {
  return {
    action: Action.ACTION_DEFER,
    reason: Reason.REASON_NEW_TRIPLET,
    retryAfterSeconds: 300,
    smtpCode: 451,
    enhancedStatusCode: "4.7.1",
    smtpText: "Greylisted, please try again later",
    xGreylistHeader: "",
    delayedSeconds: 0,
    shadowAction: Action.ACTION_UNSPECIFIED,
    ...fields,
  };
}

describe("policy replies for decisions", () => {
  const cases: [name: string, decision: Partial<CheckResponse>, mode: "defer_if_permit" | "smtp", want: string][] = [
    ["a defer", {}, "defer_if_permit", "action=DEFER_IF_PERMIT Greylisted, please try again later"],
    ["a defer in SMTP form", {}, "smtp", "action=451 4.7.1 Greylisted, please try again later"],
    ["a defer with a text Postfix cannot take", { smtpText: "a\nb" }, "defer_if_permit", "action=DEFER_IF_PERMIT"],
    ["a defer with an over-long text", { smtpText: "x".repeat(1200) }, "defer_if_permit", "action=DEFER_IF_PERMIT"],
    [
      "a defer carrying a 5xx code, in SMTP form",
      { smtpCode: 550, enhancedStatusCode: "5.7.1" },
      "smtp",
      "action=DEFER_IF_PERMIT Greylisted, please try again later",
    ],
    [
      "a defer in SMTP form with a bad enhanced code",
      { enhancedStatusCode: "5.7.1" },
      "smtp",
      "action=DEFER_IF_PERMIT Greylisted, please try again later",
    ],
    ["a reject", { action: Action.ACTION_REJECT, smtpText: "Blocked" }, "defer_if_permit", "action=REJECT Blocked"],
    [
      "a reject with a text Postfix cannot take",
      { action: Action.ACTION_REJECT, smtpText: "blocked\nby policy" },
      "defer_if_permit",
      "action=REJECT",
    ],
    ["an accept", { action: Action.ACTION_ACCEPT }, "defer_if_permit", "action=DUNNO"],
    [
      "a pass after a delay",
      { action: Action.ACTION_ACCEPT, xGreylistHeader: "delayed 300 seconds" },
      "smtp",
      "action=PREPEND X-Greylist: delayed 300 seconds",
    ],
  ];
  for (const [name, decision, mode, want] of cases) {
    it(`${name} -> ${want}`, () => {
      const [reply] = toReply(response(decision), mode);
      assert.equal(reply.toString(), `${want}\n\n`);
    });
  }
});
