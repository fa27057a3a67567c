import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatRfc5322Date, xGreylistValue } from "../../services/decision/domain/header";

describe("X-Greylist header", () => {
  it("formats RFC 5322 dates in UTC", () => {
    assert.equal(formatRfc5322Date(Date.UTC(2026, 10, 27, 1, 39, 56)), "Fri, 27 Nov 2026 01:39:56 +0000");
    assert.equal(formatRfc5322Date(Date.UTC(2027, 0, 3, 9, 5, 7)), "Sun, 3 Jan 2027 09:05:07 +0000");
  });
  it("says how long, by what, where and when", () => {
    assert.equal(
      xGreylistValue(312, "greyfleet-1.2.3", "mx1.example.net", Date.UTC(2026, 10, 27, 1, 39, 56)),
      "delayed 312 seconds by greyfleet-1.2.3 at mx1.example.net; Fri, 27 Nov 2026 01:39:56 +0000",
    );
  });
});
