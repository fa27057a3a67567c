/** Locating files shipped with the project (proto/, Lua scripts) from compiled or source code. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";

let cachedRoot: string | undefined;

/** The project's top directory: the nearest ancestor of this file holding greyfleet's package.json. */
export function projectRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = __dirname;
  for (;;) {
    const candidate = join(dir, "package.json");
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, "utf8")) as { name?: unknown };
      if (pkg.name === "greyfleet") {
        cachedRoot = dir;
        return dir;
      }
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`greyfleet's package.json not found above ${__dirname}`);
    dir = parent;
  }
}

/** Absolute path of a file given relative to the project's top directory. */
export function projectFile(relative: string): string {
  return join(projectRoot(), relative);
}
