/**
 * deploy/docker/Dockerfile, checked without a Docker engine: parsed, its stages and copies held
 * to what the image must be (multi-stage, non-root, production dependencies only, every file the
 * services read at run time), and the runtime stage's file layout rebuilt from this checkout and
 * started, so a file the image forgets fails here as it would in the container.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { after, describe, it } from "node:test";
import { projectFile, projectRoot } from "../../services/shared/paths";
import { freePort } from "../support/ports";
import { waitFor } from "../support/wait";

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

interface Stage {
  readonly image: string;
  readonly name: string | undefined;
  readonly instructions: readonly Instruction[];
}

/** Dockerfile text -> stages, with line continuations joined, comments dropped and ARGs in FROM expanded. */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (/^\s*#/.test(line) || (pending === "" && line.trim() === "")) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push((pending + line).trim());
    pending = "";
  }
  assert.equal(pending, "", "the Dockerfile ends inside a continued line");
  const globalArgs = new Map<string, string>();
  const stages: { image: string; name: string | undefined; instructions: Instruction[] }[] = [];
  for (const line of logical) {
    const space = line.search(/\s/);
    const keyword = (space === -1 ? line : line.slice(0, space)).toUpperCase();
    const args = space === -1 ? "" : line.slice(space + 1).trim();
    if (keyword === "FROM") {
      const match = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      assert.ok(match?.[1], `FROM ${args}`);
      const image = match[1].replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a?: string, b?: string) => {
        const value = globalArgs.get(a ?? b ?? "");
        assert.ok(value !== undefined, `FROM uses an ARG without a default: ${args}`);
        return value;
      });
      stages.push({ image, name: match[2], instructions: [] });
    } else if (stages.length === 0) {
      assert.equal(keyword, "ARG", `only ARG may come before the first FROM, not ${keyword}`);
      const [name, value] = args.split("=", 2);
      if (name && value !== undefined) globalArgs.set(name, value);
    } else {
      stages.at(-1)?.instructions.push({ keyword, args });
    }
  }
  return stages;
}

/** A COPY's flags, sources and destination (shell form; JSON form too). */
function parseCopy(args: string): { flags: Map<string, string>; sources: string[]; dest: string } {
  const words = args.startsWith("[") ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  const flags = new Map<string, string>();
  while (words[0]?.startsWith("--")) {
    const [flag, value] = (words.shift() as string).slice(2).split("=", 2);
    flags.set(flag ?? "", value ?? "");
  }
  const dest = words.pop();
  assert.ok(dest && words.length > 0, `COPY ${args}`);
  return { flags, sources: words, dest };
}

/** Whether a .dockerignore pattern (`*`, `**`, no `!`) excludes `path` or a directory above it. */
function ignores(pattern: string, path: string): boolean {
  const part = (text: string) => text.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*");
  const regex = new RegExp(`^${pattern.split("**/").map(part).join("(?:.*/)?")}$`);
  const parts = path.split("/");
  return parts.some((_, i) => regex.test(parts.slice(0, i + 1).join("/")));
}

function all(stage: Stage, keyword: string): string[] {
  return stage.instructions.filter((i) => i.keyword === keyword).map((i) => i.args);
}

function last(stage: Stage, keyword: string): string {
  const found = all(stage, keyword);
  assert.ok(found.length > 0, `no ${keyword} in stage ${stage.name ?? stage.image}`);
  return found.at(-1) as string;
}

/** Every file the compiled services read through projectFile(), as paths or path prefixes. */
function runtimeFiles(): string[] {
  const found: string[] = [];
  const visit = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (name === "gen") continue;
      if (statSync(path).isDirectory()) visit(path);
      else if (name.endsWith(".ts")) {
        const source = readFileSync(path, "utf8");
        for (const [, argument] of source.matchAll(/projectFile\(([^)]*)\)/g)) {
          const arg = (argument ?? "").trim();
          if (arg === "relative: string" || arg === "") continue; // the definition itself
          const literal = /^["'`]([^"'`$]*)/.exec(arg);
          if (literal?.[1]) {
            found.push(literal[1]);
            continue;
          }
          // A constant of the same file: const NAME = "path";
          const constant = new RegExp(`const ${arg}\\s*=\\s*"([^"]+)"`).exec(source);
          assert.ok(constant?.[1], `${path}: projectFile(${arg}) reads a file this test cannot resolve`);
          found.push(constant[1]);
        }
      }
    }
  };
  visit(projectFile("services"));
  return found;
}

describe("deploy/docker/Dockerfile", () => {
  const dockerfile = readFileSync(projectFile("deploy/docker/Dockerfile"), "utf8");
  const stages = parseDockerfile(dockerfile);
  const runtime = stages.at(-1) as Stage;
  const build = stages.find((s) => s.name === "build");
  const buildDir = build ? last(build, "WORKDIR") : "";
  const appDir = last(runtime, "WORKDIR");
  const runtimeCopies = all(runtime, "COPY").map(parseCopy);

  it("builds in a stage of its own on Node 20 Debian, with the native toolchain and dev dependencies", () => {
    assert.ok(stages.length >= 2, "multi-stage");
    assert.ok(build, 'a stage named "build"');
    assert.match(build.image, /^node:20-bookworm(-slim)?$/);
    const runs = all(build, "RUN");
    const install = runs.find((r) => r.includes("apt-get install"));
    for (const pkg of ["python3", "make", "g++"]) assert.ok(install?.split(/\s+/).includes(pkg), `installs ${pkg}`);
    const ci = runs.findIndex(
      (r) => /\bnpm ci\b/.test(r) && !r.includes("--omit=dev") && !r.includes("--ignore-scripts"),
    );
    const prune = runs.findIndex((r) => /\bnpm prune\b.*--omit=dev/.test(r));
    assert.ok(ci !== -1, "a full `npm ci` (runs prepare: buf generate + tsc, needs the dev dependencies)");
    assert.ok(prune > ci, "`npm prune --omit=dev` after the build");
  });

  it("copies into the build stage everything `npm ci` and the build need, and .dockerignore keeps it", () => {
    assert.ok(build);
    const copied = all(build, "COPY").flatMap((args) => parseCopy(args).sources);
    for (const file of ["package.json", "package-lock.json", "tsconfig.json", "buf.yaml", "buf.gen.yaml"]) {
      assert.ok(copied.includes(file), `COPY ${file}`);
    }
    for (const dir of ["proto", "services", "lists"]) assert.ok(copied.includes(dir), `COPY ${dir}`);
    const ignored = readFileSync(projectFile(".dockerignore"), "utf8")
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"));
    for (const pattern of ["**/node_modules", "dist", ".git"]) assert.ok(ignored.includes(pattern), pattern);
    for (const source of copied) {
      const hit = ignored.find((pattern) => ignores(pattern, source));
      assert.equal(hit, undefined, `.dockerignore drops ${source}, which the build copies`);
    }
  });

  it("runs on node:20-bookworm-slim as a numeric non-root user, the one the Kubernetes pods run as", () => {
    assert.equal(runtime.image, "node:20-bookworm-slim");
    const user = last(runtime, "USER");
    const [uid, gid] = user.split(":");
    assert.match(uid ?? "", /^\d+$/, "numeric, so runAsNonRoot can check it");
    assert.notEqual(Number(uid), 0);
    assert.notEqual(Number(gid ?? "1"), 0);
    assert.ok(
      all(runtime, "RUN").some((r) => r.includes(`useradd`) && r.includes(`--uid ${uid}`)),
      "the user exists in /etc/passwd",
    );
    const k8s = readFileSync(projectFile("deploy/k8s/base/deployment.yaml"), "utf8");
    assert.ok(k8s.includes(`runAsUser: ${uid}`), "deploy/k8s runs as the image's user");
  });

  it("copies from the build stage only the runtime files, nothing from the context, installs nothing", () => {
    assert.deepEqual(all(runtime, "ADD"), []);
    for (const run of all(runtime, "RUN"))
      assert.doesNotMatch(run, /\bnpm\b|\bnpx\b/, "no install in the runtime stage");
    for (const copy of runtimeCopies) assert.equal(copy.flags.get("from"), "build", `COPY ${copy.sources.join(" ")}`);
    const sources = runtimeCopies.flatMap((c) => c.sources.map((s) => posix.relative(buildDir, s)));
    assert.deepEqual(sources.sort(), [
      "dist/services",
      "lists",
      "node_modules",
      "package.json",
      "proto",
      "services/decision/store/lua",
    ]);
  });

  it("ships every file the services read through projectFile()", () => {
    const files = runtimeFiles();
    for (const known of [
      "package.json",
      "proto/greyfleet/v1/greylist.proto",
      "services/decision/store/lua/",
      "lists/default-whitelist.txt",
    ]) {
      assert.ok(files.includes(known), `the services read ${known} (this test's scan found ${files.join(", ")})`);
    }
    const shipped = runtimeCopies.map((c) => posix.relative(appDir, posix.resolve(appDir, c.dest)));
    for (const file of files) {
      assert.ok(
        shipped.some((dest) => file === dest || file.startsWith(`${dest.replace(/\/$/, "")}/`)),
        `${file} is read at run time but not copied into the image`,
      );
    }
  });

  it("starts greyfleet serve on all interfaces by default, by exec form", () => {
    const entrypoint = JSON.parse(last(runtime, "ENTRYPOINT")) as string[];
    assert.deepEqual(entrypoint, ["node", posix.join(appDir, "dist/services/cli/main.js")]);
    const cmd = (JSON.parse(last(runtime, "CMD")) as string[]).join(" ");
    assert.match(cmd, /^serve /);
    assert.ok(cmd.includes("--listen 0.0.0.0:50051"));
    assert.ok(cmd.includes("--metrics-listen 0.0.0.0:9750"));
    assert.equal(last(runtime, "STOPSIGNAL"), "SIGTERM");
  });

  describe("the runtime stage's files, rebuilt from this checkout", () => {
    const root = mkdtempSync(join(tmpdir(), "greyfleet-image-"));
    after(() => rmSync(root, { recursive: true, force: true }));

    it("run `greyfleet version` and start `greyfleet serve` (proto, Lua, whitelist), which stops on SIGTERM", async () => {
      const app = join(root, appDir);
      for (const copy of runtimeCopies) {
        for (const source of copy.sources) {
          const from = join(projectRoot(), posix.relative(buildDir, source));
          const to = join(app, copy.dest);
          mkdirSync(dirname(to), { recursive: true });
          // This checkout's node_modules (with dev dependencies) stands in for the pruned one.
          if (source.endsWith("node_modules")) symlinkSync(from, to, "dir");
          else cpSync(from, to, { recursive: true });
        }
      }
      const main = join(app, "dist/services/cli/main.js");
      const pkg = JSON.parse(readFileSync(projectFile("package.json"), "utf8")) as { version: string };
      const version = spawnSync(process.execPath, [main, "version"], { encoding: "utf8", cwd: root });
      assert.equal(version.stdout.trim(), `greyfleet ${pkg.version}`, version.stderr);

      // A Redis URL nobody answers: the service starts anyway (failure mode), after loading the
      // Lua scripts, the proto files for reflection and the default whitelist.
      const args = ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
      const store = `redis://127.0.0.1:${await freePort()}/0`;
      const child = spawn(process.execPath, [main, ...args, "--store", store], { cwd: root, stdio: "pipe" });
      let output = "";
      child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      try {
        await Promise.race([
          waitFor("greyfleet serve from the image layout to start", () => output.includes("greyfleet started"), 15_000),
          exited.then((code) => assert.fail(`greyfleet serve exited with ${code}:\n${output}`)),
        ]);
        assert.doesNotMatch(output, /ENOENT/);
      } finally {
        child.kill("SIGTERM");
      }
      assert.equal(await exited, 0, output);
    });
  });
});
