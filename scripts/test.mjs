// `npm test`: installs the system packages the tests need (as root on Debian, if missing), then
// lint, typecheck + build, and every test file under dist/test (the soak last, alone). Fails if
// no test file is found.
// Arguments filter test files by path substring: `npm test -- unit conformance`.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/** Commands the tests run, and the Debian package that provides each. */
const SYSTEM_COMMANDS = [
  ["redis-server", "redis-server"],
  ["redis-cli", "redis-tools"],
  ["postfix", "postfix"],
  ["swaks", "swaks"],
  ["miltertest", "miltertest"],
  ["script", "bsdutils"],
  ["promtool", "prometheus"],
  // test/deploy: systemd-analyze verify/security, systemd-sysusers, systemd-tmpfiles; m4 for sendmail .mc.
  ["systemd-analyze", "systemd"],
  ["m4", "m4"],
  ["kubectl", "kubectl"],
  ["openssl", "openssl"],
];

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { stdio: "inherit", ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function has(command) {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

function ensureSystemPackages() {
  const missing = SYSTEM_COMMANDS.filter(([command]) => !has(command)).map(([, pkg]) => pkg);
  if (missing.length === 0) return;
  const root = process.getuid?.() === 0;
  if (!root || !has("apt-get")) {
    console.error(`npm test: missing system packages: ${missing.join(" ")} (install them, or run as root on Debian)`);
    process.exit(1);
  }
  console.log(`npm test: installing ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  // Postfix asks what kind of mail system this is; the tests run their own private instances.
  spawnSync("debconf-set-selections", { input: "postfix postfix/main_mailer_type select No configuration\n" });
  if (run("apt-get", ["update", "-qq"], { env }) !== 0) process.exit(1);
  if (run("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], { env }) !== 0) process.exit(1);
  // Debian starts the packaged servers; the tests start their own on free ports.
  for (const service of ["redis-server", "postfix", "prometheus"])
    spawnSync("service", [service, "stop"], { stdio: "ignore" });
}

function findTests(dir) {
  const found = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...findTests(path));
    // Only compiled tests whose source still exists (tsc leaves outputs of deleted files behind).
    else if (name.endsWith(".test.js") && existsSync(path.replace(/^dist\//, "").replace(/\.js$/, ".ts"))) {
      found.push(path);
    }
  }
  return found;
}

ensureSystemPackages();
if (run("npx", ["biome", "check", "--error-on-warnings", "."]) !== 0) process.exit(1);
if (run("npm", ["run", "build", "--silent"]) !== 0) process.exit(1);
const filters = process.argv.slice(2);
const files = findTests("dist/test")
  .filter((file) => filters.length === 0 || filters.some((filter) => file.includes(filter)))
  .sort();
if (files.length === 0) {
  console.error(
    `npm test: no test files found under dist/test${filters.length ? ` matching ${filters.join(", ")}` : ""}`,
  );
  process.exit(1);
}
// The soak runs last and alone: it paces its own load and measures memory, and its load would
// disturb the timings other tests assert.
const soak = files.filter((file) => file.startsWith(join("dist", "test", "soak")));
const rest = files.filter((file) => !soak.includes(file));
console.log(`npm test: ${files.length} test files`);
// A test that hangs fails after timeoutMs instead of holding up the run. (Not --test-force-exit:
// on Node 20 it ended a test file before all its tests had run, once in a CI run, silently.)
const node = (group, concurrency, timeoutMs) =>
  group.length === 0
    ? 0
    : run(process.execPath, [
        "--test",
        `--test-concurrency=${concurrency}`,
        `--test-timeout=${timeoutMs}`,
        "--test-reporter=spec",
        ...group,
      ]);
const status = node(rest, 2, 5 * 60_000);
process.exit(status !== 0 ? status : node(soak, 1, 20 * 60_000));
