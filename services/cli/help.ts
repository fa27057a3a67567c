/** `greyfleet help`: commands, and every setting from the defaults table. */
import { envName } from "../shared/config";
import { type Command, SETTINGS } from "../shared/settings";

const COMMANDS = `usage: greyfleet <command> [--setting value ...]

commands:
  serve     the decision service: gRPC GreylistService, health, reflection, /metrics
  policy    the Postfix policy delegation server (check_policy_service), asking the service
  milter    the milter server for Postfix and sendmail, asking the service
  all       the service and both shims in one process, on the embedded store (npm start)
  version   print the version
  help      this text; "greyfleet help <command>" lists that command's settings

Settings come from --flags, GREYFLEET_* environment variables or a YAML file (--config FILE),
in that precedence. Durations take 300, 300s, 5m, 48h, 35d (ms settings also 250ms).
`;

/** The help text; with a command, its settings and their defaults. */
export function helpText(command?: string): string {
  if (command !== "serve" && command !== "all" && command !== "policy" && command !== "milter") return COMMANDS;
  const lines = [`greyfleet ${command} settings:`, ""];
  for (const spec of Object.values(SETTINGS)) {
    if (!spec.commands.includes(command as Command)) continue;
    const fallback = typeof spec.default === "string" ? spec.default : (spec.default[command as Command] ?? "");
    lines.push(`  --${spec.flag}  (env ${envName(spec.flag)}, default "${fallback}")`, `      ${spec.doc}`);
  }
  return `${lines.join("\n")}\n`;
}
