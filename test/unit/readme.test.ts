import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { readmeWithSettings } from "../../scripts/settings-table";
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
    const names = readFileSync(projectFile("services/shared/metric-names.ts"), "utf8").matchAll(
      /"(greyfleet_[a-z_]+)"/g,
    );
    for (const [, name] of names) assert.ok(readme.includes(`\`${name}\``), `${name} is not in the README`);
  });
});
