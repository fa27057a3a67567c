/**
 * Real Redis topologies for fleet tests, started by the test on free loopback ports and
 * stopped afterwards: a Cluster of 3 masters + 3 replicas (`redis-cli --cluster create`), and a
 * Sentinel setup of 1 master, 1 replica and 3 sentinels.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RedisProcess } from "./redis-server";
import { waitFor } from "./wait";

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** A free port whose cluster bus port (+10000) is free too. */
async function clusterPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    if (taken.has(port) || taken.has(port + 10_000)) continue;
    if ((await portFree(port)) && (await portFree(port + 10_000))) {
      taken.add(port);
      return port;
    }
  }
}

/**
 * Runs a topology's set-up; if it fails, kills every process it started and removes its
 * directory, so a failed start leaves no redis-server behind to hold up the test run.
 */
async function cleanUpOnFailure<T>(
  processes: readonly RedisProcess[],
  dir: string,
  setUp: () => Promise<T>,
): Promise<T> {
  try {
    return await setUp();
  } catch (error) {
    await Promise.all(processes.map((redis) => redis.kill()));
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** A Redis Cluster of 3 masters and 3 replicas. */
export class RedisCluster {
  private constructor(
    readonly nodes: readonly RedisProcess[],
    private readonly dir: string,
  ) {}

  static async start(): Promise<RedisCluster> {
    const dir = mkdtempSync(join(tmpdir(), "greyfleet-cluster-"));
    const taken = new Set<number>();
    const nodes: RedisProcess[] = [];
    for (let i = 0; i < 6; i++) {
      const port = await clusterPort(taken);
      nodes.push(
        new RedisProcess(port, [
          "--port",
          String(port),
          "--bind",
          "127.0.0.1",
          "--cluster-enabled",
          "yes",
          "--cluster-config-file",
          join(dir, `nodes-${port}.conf`),
          "--cluster-node-timeout",
          "2000",
          "--save",
          "",
          "--appendonly",
          "no",
          "--dir",
          dir,
          "--protected-mode",
          "no",
        ]),
      );
    }
    return cleanUpOnFailure(nodes, dir, () => RedisCluster.setUp(nodes, dir));
  }

  /** Starts the nodes, creates the cluster and waits until it is whole and in sync. */
  private static async setUp(nodes: readonly RedisProcess[], dir: string): Promise<RedisCluster> {
    await Promise.all(nodes.map((node) => node.start()));
    const create = spawnSync(
      "redis-cli",
      ["--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", "1", "--cluster-yes"],
      { encoding: "utf8", timeout: 60_000 },
    );
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed:\n${create.stdout}\n${create.stderr}`);
    const cluster = new RedisCluster(nodes, dir);
    await cluster.waitHealthy();
    // The replicas are assigned a moment after the slots: wait until the layout is 3 + 3.
    await waitFor(
      "3 masters with slots and 3 replicas",
      async () => (await cluster.layout()).replicas === 3,
      30_000,
      100,
    );
    await cluster.waitReplicasInSync();
    return cluster;
  }

  /** redis+cluster:// URL with every node as a seed. */
  get url(): string {
    return `redis+cluster://${this.nodes.map((n) => `127.0.0.1:${n.port}`).join(",")}`;
  }

  /** Waits until every live node reports cluster_state:ok. */
  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    await waitFor(
      "the cluster to be ok",
      async () => {
        for (const node of this.nodes.filter((n) => n.child)) {
          const client = node.client();
          try {
            if (!/cluster_state:ok/.test(await client.cluster("INFO"))) return false;
          } finally {
            client.disconnect();
          }
        }
        return true;
      },
      timeoutMs,
      100,
    );
  }

  /** The masters serving slots now, and how many replicas there are, by asking a live node. */
  async layout(): Promise<{ masters: RedisProcess[]; replicas: number }> {
    const live = this.nodes.find((n) => n.child) as RedisProcess;
    const client = live.client();
    try {
      // "<id> <ip:port@bus> <flags> <master id> <ping> <pong> <epoch> <link> [slots...]"
      const lines = String(await client.cluster("NODES"))
        .split("\n")
        .filter((line) => line.trim() !== "")
        .map((line) => line.split(" "));
      const healthy = (fields: string[]) => !(fields[2] ?? "").split(",").some((flag) => flag.startsWith("fail"));
      const role = (fields: string[], name: string) => (fields[2] ?? "").split(",").includes(name);
      const ports = lines
        .filter((fields) => role(fields, "master") && healthy(fields) && fields.length > 8)
        .map((fields) => Number(/:(\d+)@/.exec(fields[1] ?? "")?.[1]));
      return {
        masters: this.nodes.filter((n) => ports.includes(n.port) && n.child),
        replicas: lines.filter((fields) => role(fields, "slave") && healthy(fields)).length,
      };
    } finally {
      client.disconnect();
    }
  }

  /** Waits until every replica's link to its master is up (so it may take over). */
  async waitReplicasInSync(timeoutMs = 30_000): Promise<void> {
    await waitFor(
      "the replicas to sync",
      async () => {
        for (const node of this.nodes.filter((n) => n.child)) {
          const client = node.client();
          try {
            const info = await client.info("replication");
            if (/role:slave/.test(info) && !/master_link_status:up/.test(info)) return false;
          } finally {
            client.disconnect();
          }
        }
        return true;
      },
      timeoutMs,
      100,
    );
  }

  /** The nodes that are masters serving slots now. */
  async masters(): Promise<RedisProcess[]> {
    return (await this.layout()).masters;
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.kill()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A master, its replica and 3 sentinels watching them as "mymaster". */
export class RedisSentinel {
  private constructor(
    readonly master: RedisProcess,
    readonly replica: RedisProcess,
    readonly sentinels: readonly RedisProcess[],
    private readonly dir: string,
  ) {}

  static async start(): Promise<RedisSentinel> {
    const dir = mkdtempSync(join(tmpdir(), "greyfleet-sentinel-"));
    const taken = new Set<number>();
    const base = [
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--protected-mode",
      "no",
      "--dir",
      dir,
    ].concat(["--repl-diskless-sync-delay", "0"]);
    const masterPort = await clusterPort(taken);
    const replicaPort = await clusterPort(taken);
    const processes: RedisProcess[] = [];
    return cleanUpOnFailure(processes, dir, async () => {
      const master = new RedisProcess(masterPort, ["--port", String(masterPort), ...base]);
      const replica = new RedisProcess(replicaPort, [
        "--port",
        String(replicaPort),
        "--replicaof",
        "127.0.0.1",
        String(masterPort),
        ...base,
      ]);
      processes.push(master, replica);
      await master.start();
      await replica.start();
      const sentinels: RedisProcess[] = [];
      for (let i = 0; i < 3; i++) {
        const port = await clusterPort(taken);
        const config = join(dir, `sentinel-${port}.conf`);
        writeFileSync(
          config,
          [
            `port ${port}`,
            "bind 127.0.0.1",
            "protected-mode no",
            `dir ${dir}`,
            `sentinel monitor mymaster 127.0.0.1 ${masterPort} 2`,
            "sentinel down-after-milliseconds mymaster 1000",
            "sentinel failover-timeout mymaster 5000",
            "sentinel parallel-syncs mymaster 1",
            "",
          ].join("\n"),
        );
        sentinels.push(new RedisProcess(port, [config, "--sentinel"]));
      }
      processes.push(...sentinels);
      await Promise.all(sentinels.map((s) => s.start()));
      const setup = new RedisSentinel(master, replica, sentinels, dir);
      await waitFor("the replica to sync", async () => {
        const client = replica.client();
        try {
          return /master_link_status:up/.test(await client.info("replication"));
        } finally {
          client.disconnect();
        }
      });
      return setup;
    });
  }

  /** redis+sentinel:// URL naming every sentinel. */
  get url(): string {
    return `redis+sentinel://${this.sentinels.map((s) => `127.0.0.1:${s.port}`).join(",")}/mymaster`;
  }

  async stop(): Promise<void> {
    await Promise.all([this.master, this.replica, ...this.sentinels].map((n) => n.kill()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
