/**
 * `npm run bench`: runs the benchmarks and prints their figures. Every load loop is bounded in
 * time. Usage: npm run bench -- [--seconds 8] [--in-flight 64] [--workers 1] [--runs 3]
 * [--connections 8] [--sessions 8] [--known-triplets 5000] [decision] [policy] [milter]
 */
import { parseArgs } from "node:util";
import { benchDecision } from "./decision-bench";
import { benchMilter } from "./milter-bench";
import { benchPolicy } from "./policy-bench";

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      seconds: { type: "string", default: "8" },
      "in-flight": { type: "string", default: "64" },
      workers: { type: "string", default: "1" },
      runs: { type: "string", default: "3" },
      "known-triplets": { type: "string", default: "5000" },
      connections: { type: "string", default: "8" },
      sessions: { type: "string", default: "8" },
    },
  });
  const number = (name: keyof typeof values): number => {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} must be a positive whole number`);
    return value;
  };
  const sections = positionals.length > 0 ? positionals : ["decision", "policy", "milter"];
  for (const section of sections) {
    if (section === "decision") {
      await benchDecision({
        seconds: number("seconds"),
        inFlight: number("in-flight"),
        workers: number("workers"),
        runs: number("runs"),
        knownTriplets: number("known-triplets"),
      });
    } else if (section === "policy") {
      await benchPolicy({
        seconds: number("seconds"),
        connections: number("connections"),
        runs: number("runs"),
        knownTriplets: number("known-triplets"),
      });
    } else if (section === "milter") {
      await benchMilter({
        seconds: number("seconds"),
        sessions: number("sessions"),
        runs: number("runs"),
        knownTriplets: number("known-triplets"),
      });
    } else {
      throw new Error(`unknown benchmark "${section}" (decision, policy, milter)`);
    }
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
