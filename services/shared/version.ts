/** The product name and version, as written in headers, logs and build info. */
import { readFileSync } from "node:fs";
import { projectFile } from "./paths";

/** Version from package.json. */
export const PRODUCT_VERSION = (JSON.parse(readFileSync(projectFile("package.json"), "utf8")) as { version: string })
  .version;
/** "greyfleet-<version>", as in the X-Greylist header. */
export const PRODUCT = `greyfleet-${PRODUCT_VERSION}`;
