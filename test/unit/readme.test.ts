import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { readmeWithSettings } from "../../scripts/settings-table";
import * as metricNames from "../../services/shared/metric-names";
import { projectFile } from "../../services/shared/paths";

describe("README", () => {
  const readme = readFileSync(projectFile("README.md"), "utf8");

  it("documents every setting exactly as the defaults table has it (npm run docs)", () => {
    assert.equal(readme, readmeWithSettings(readme));
  });

  it("gives the two set-up commands", () => {
    assert.ok(readme.includes("npm ci && npm start"));
    assert.ok(readme.includes("npm test"));
  });

  it("lists every exported metric name", () => {
    const names = Object.values<unknown>(metricNames).filter(
      (value): value is string => typeof value === "string" && value.startsWith("greyfleet_"),
    );
    assert.ok(names.length > 0, "no metric names found");
    for (const name of names) assert.ok(readme.includes(`\`${name}\``), `${name} is not in the README`);
  });
});
