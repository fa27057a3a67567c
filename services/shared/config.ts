/**
 * Reads the configuration of one command from flags, GREYFLEET_* environment variables and an
 * optional YAML file (--config), in that precedence, into a new frozen object. Any invalid
 * setting is reported by name; nothing here throws.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { type Command, type Config, SETTINGS, type Setting, type SettingName } from "./settings";

/** A configuration problem, naming the setting and where its value came from. */
export interface ConfigProblem {
  readonly problems: readonly string[];
}

/** Where raw setting values come from. */
export interface ConfigSources {
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Reads the --config file; injected so tests need no files. */
  readonly readFile?: (path: string) => string;
}

/** The environment variable of a flag: GREYFLEET_ + upper snake case. */
export function envName(flag: string): string {
  return `GREYFLEET_${flag.toUpperCase().replaceAll("-", "_")}`;
}

const entries = Object.entries(SETTINGS) as [SettingName, Setting<unknown>][];

/** Parses flags of the form --name value and --name=value. Positional words are not allowed. */
function parseFlags(argv: readonly string[], problems: string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i] ?? "";
    if (!word.startsWith("--")) {
      problems.push(`unexpected argument "${word}" (settings are --name value)`);
      continue;
    }
    const eq = word.indexOf("=");
    const name = eq === -1 ? word.slice(2) : word.slice(2, eq);
    let value: string | undefined;
    if (eq !== -1) value = word.slice(eq + 1);
    else if (i + 1 < argv.length) value = argv[++i];
    if (value === undefined) problems.push(`--${name} needs a value`);
    else if (flags.has(name)) problems.push(`--${name} is given twice`);
    else flags.set(name, value);
  }
  return flags;
}

function readYaml(path: string, sources: ConfigSources, problems: string[]): Map<string, string> {
  const values = new Map<string, string>();
  let content: unknown;
  try {
    const text = (sources.readFile ?? ((p: string) => readFileSync(p, "utf8")))(path);
    // Every scalar as written: with YAML's core schema a password 0123 would become 123.
    content = parseYaml(text, { schema: "failsafe" });
  } catch (error) {
    problems.push(`config file ${path}: ${error instanceof Error ? error.message : String(error)}`);
    return values;
  }
  if (content === null || content === undefined) return values;
  if (typeof content !== "object" || Array.isArray(content)) {
    problems.push(`config file ${path}: expected a mapping of setting: value`);
    return values;
  }
  const known = new Set(entries.map(([, spec]) => spec.flag));
  for (const [key, value] of Object.entries(content)) {
    if (!known.has(key)) problems.push(`config file ${path}: unknown setting "${key}"`);
    else if (typeof value === "string" || typeof value === "number") values.set(key, String(value));
    else problems.push(`config file ${path}: "${key}" must be a string or a number`);
  }
  return values;
}

/**
 * Loads the configuration of `command`. Flags of other commands are refused; environment
 * variables and YAML keys of other commands are ignored so one file can serve every process.
 * `flagAliases` maps a command-specific flag (the policy shim's --listen) to its setting's flag.
 */
export function loadConfig(
  command: Command,
  sources: ConfigSources,
  flagAliases: Readonly<Record<string, string>> = {},
): Config | ConfigProblem {
  const problems: string[] = [];
  const flags = parseFlags(sources.argv, problems);
  const configPath = flags.get("config") ?? sources.env.GREYFLEET_CONFIG;
  flags.delete("config");
  const yaml = configPath ? readYaml(configPath, sources, problems) : new Map<string, string>();

  const applicable = new Map<string, SettingName>();
  for (const [name, spec] of entries) if (spec.commands.includes(command)) applicable.set(spec.flag, name);
  const fromFlags = new Map<SettingName, string>();
  for (const [flag, value] of flags) {
    const name = applicable.get(flagAliases[flag] ?? flag);
    if (name === undefined) problems.push(`--${flag} is not a setting of "greyfleet ${command}"`);
    else if (SETTINGS[name].secret) {
      problems.push(
        `--${flag} is a secret: set ${envName(flag)} or put it in the --config file, not on the command line`,
      );
    } else fromFlags.set(name, value);
  }

  const config: Record<string, unknown> = {};
  for (const [name, spec] of entries) {
    // Settings of other commands keep their defaults, so the object is always complete.
    const own = spec.commands.includes(command);
    const env = own ? sources.env[envName(spec.flag)] : undefined;
    const fallback = typeof spec.default === "string" ? spec.default : (spec.default[command] ?? "");
    const [raw, origin] =
      fromFlags.get(name) !== undefined
        ? [fromFlags.get(name) as string, `--${spec.flag}`]
        : env !== undefined
          ? [env, envName(spec.flag)]
          : own && yaml.has(spec.flag)
            ? [yaml.get(spec.flag) as string, `${spec.flag} in ${configPath}`]
            : [fallback, `default of ${spec.flag}`];
    const value = spec.parse(raw);
    if (typeof value === "object" && value !== null && "error" in value) problems.push(`${origin}: ${value.error}`);
    else config[name] = value;
  }
  if (problems.length === 0) problems.push(...crossCheck(config as unknown as Config, command));
  return problems.length > 0 ? { problems } : Object.freeze(config as unknown as Config);
}

/** Rules between settings. */
function crossCheck(config: Config, command: Command): string[] {
  if (command !== "serve" && command !== "all") return [];
  const problems: string[] = [];
  if (config.retryWindowSeconds <= config.greylistDelaySeconds) {
    problems.push(
      `--retry-window (${config.retryWindowSeconds}s) must be longer than --delay (${config.greylistDelaySeconds}s)`,
    );
  }
  if (config.maxAgeSeconds < config.retryWindowSeconds) {
    problems.push(`--max-age (${config.maxAgeSeconds}s) must not be shorter than --retry-window`);
  }
  return problems;
}

/** True when loadConfig failed. */
export function isConfigProblem(value: Config | ConfigProblem): value is ConfigProblem {
  return "problems" in value;
}
