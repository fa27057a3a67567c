#!/usr/bin/env node
import { PRODUCT_VERSION } from "../shared/version";
import { runAdmin } from "./admin";
import { helpText } from "./help";
/** The `greyfleet` command: dispatches to its subcommands. */
import { runService } from "./run-service";

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
    case "policy":
    case "milter":
    case "all":
      return runService(command, rest);
    case "admin":
      return runAdmin(rest);
    case "version":
    case "--version":
      process.stdout.write(`greyfleet ${PRODUCT_VERSION}\n`);
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(helpText(rest[0]));
      return 0;
    default:
      process.stderr.write(`greyfleet: unknown command "${command}"; try "greyfleet help"\n`);
      return 2;
  }
}

// Output piped into a command that stopped reading (`| head`) is not an error of ours.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0);
  throw error;
});

main(process.argv.slice(2)).then(
  (code) => {
    // Servers keep the process alive; one-shot commands exit with their code.
    if (code === -1) return;
    process.exitCode = code;
    // A server that failed to start may leave a handle behind (grpc-js's certificate watchers
    // after a failed bind): the process ends all the same, so its supervisor sees the failure.
    if (code !== 0) setTimeout(() => process.exit(code), 1_000).unref();
  },
  (error: unknown) => {
    process.stderr.write(`greyfleet: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);
