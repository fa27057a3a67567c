/**
 * A bounded soak of a fleet: Redis Sentinel (1 master, 1 replica, 3 sentinels), two decision
 * replicas, a policy shim and a milter shim each balancing over both, under steady load (new
 * triplets and their retries) for GREYFLEET_SOAK_SECONDS (default 300), with the Redis master
 * killed half-way. Afterwards: no process crashed and no request hung; the resident memory of
 * every greyfleet process stayed flat after warm-up; and the counts add up: what the clients
 * received, what each shim counted by action, and what the replicas decided.
 *
 * The load is paced (one request per shim every 10 ms); the pacing sleeps are the load's rate,
 * not waits for a condition.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import {
  DECISIONS_TOTAL,
  SHIM_FAILURE_MODE_ACTIVATIONS_TOTAL,
  SHIM_REQUESTS_TOTAL,
} from "../../services/shared/metric-names";
import { GreyfleetProcess, scrapedMetric } from "../support/greyfleet-process";
import { formatReply, ipv4, smtpSession } from "../support/milter-client";
import { PolicyClient } from "../support/policy-client";
import { uniquePrefix } from "../support/redis-server";
import { RedisSentinel } from "../support/redis-topologies";
import { startAll } from "../support/start-all";

const SECONDS = Number(process.env.GREYFLEET_SOAK_SECONDS ?? "300");
const WARM_UP_MS = Math.min(60_000, (SECONDS * 1000) / 5);
/** How often resident memory is sampled: every 5 s, and at least 20 times in a short soak. */
const SAMPLE_MS = Math.min(5_000, (SECONDS * 1000) / 20);
const PACE_MS = 10;
const HUNG_MS = 3_000;
const LOCAL = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];

/** Resident memory of a process, bytes (Linux /proc). */
function rss(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(match?.[1] ?? Number.NaN) * 1024;
}

/** `answer`, or "hung" after HUNG_MS. */
async function bounded(answer: Promise<string>): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      answer,
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve("hung"), HUNG_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Triplets asked once, retried once at least 1.5 s later (after the 1 s delay). */
class Triplets {
  private readonly waiting: { id: number; at: number }[] = [];
  private next = 0;

  /** Every fourth ask is the retry of an earlier triplet, when one is old enough. */
  pick(i: number): number {
    const oldest = this.waiting[0];
    if (i % 4 === 3 && oldest && Date.now() - oldest.at >= 1_500) {
      this.waiting.shift();
      return oldest.id;
    }
    const id = this.next++;
    this.waiting.push({ id, at: Date.now() });
    return id;
  }
}

/** A /24 of its own for each triplet (so no client network reaches the auto-whitelist). */
const network = (id: number) => `100.${64 + ((id >> 16) & 63)}.${(id >> 8) & 255}.${id & 255}`;

describe("fleet soak", () => {
  it(`${SECONDS} s of steady load with a Redis failover half-way`, async () => {
    const topology = await RedisSentinel.start();
    const started: GreyfleetProcess[] = [];
    try {
      const serve = ["serve", "--store", topology.url, "--redis-key-prefix", uniquePrefix(), "--delay", "1s"];
      const replicas = await startAll(
        [0, 1].map(() => GreyfleetProcess.start([...serve, ...LOCAL, "--store-timeout", "300ms"])),
      );
      started.push(...replicas);
      const both = replicas.map((proc) => proc.grpcAddress).join(",");
      const [policy, milter] = await startAll([
        GreyfleetProcess.start(["policy", ...LOCAL, "--decision", both, "--mta-id", "mx-a"]),
        GreyfleetProcess.start(["milter", ...LOCAL, "--decision", both, "--mta-id", "mx-b"]),
      ]);
      started.push(policy, milter);
      const processes = { "replica 1": replicas[0], "replica 2": replicas[1], policy, milter } as Record<
        string,
        GreyfleetProcess
      >;
      const received = new Map<string, number>();
      const count = (answer: string) => received.set(answer, (received.get(answer) ?? 0) + 1);
      const memory: { at: number; rss: Record<string, number> }[] = [];
      const start = Date.now();
      const end = start + SECONDS * 1000;
      let killedAt = 0;
      const policyLoad = (async () => {
        const client = await PolicyClient.open(policy.logged(/policy server listening/, "policy"));
        const triplets = new Triplets();
        for (let i = 0; Date.now() < end; i++) {
          const id = triplets.pick(i);
          // Each attempt is a message of its own (Postfix gives every message its own instance).
          const answer = await bounded(
            client.ask({ client_address: network(id), recipient: `p${id}@example.com`, instance: `soak.${i}` }),
          );
          count(`policy ${answer.replace(/^(action=PREPEND X-Greylist:).*/, "$1 …")}`);
          await delay(PACE_MS);
        }
        client.close();
      })();
      const milterLoad = (async () => {
        const address = milter.logged(/milter server listening/, "milter");
        const triplets = new Triplets();
        for (let i = 0; Date.now() < end; i++) {
          const id = triplets.pick(i);
          // One session per client network, as an MTA connects from it; closed after its RCPT.
          const session = await smtpSession(address, ipv4(network(id + 2_000_000)));
          count(`milter mail ${formatReply(await session.mail("soak@example.org"))}`);
          count(`milter ${await bounded(session.rcpt(`m${id}@example.com`).then(formatReply))}`);
          await session.quit();
          await delay(PACE_MS);
        }
      })();
      const watch = (async () => {
        while (Date.now() < end) {
          memory.push({
            at: Date.now() - start,
            rss: Object.fromEntries(Object.entries(processes).map(([name, proc]) => [name, rss(proc.child.pid ?? 0)])),
          });
          if (!killedAt && Date.now() - start >= (SECONDS * 1000) / 2) {
            killedAt = Date.now();
            await topology.master.kill();
          }
          await delay(Math.min(SAMPLE_MS, Math.max(0, end - Date.now())));
        }
      })();
      await Promise.all([policyLoad, milterLoad, watch]);

      for (const [name, proc] of Object.entries(processes)) assert.equal(proc.child.exitCode, null, `${name} crashed`);
      const got = Object.fromEntries(received);
      process.stdout.write(`# soak answers ${JSON.stringify(got)}\n`);
      const expected = new Set([
        "policy action=DEFER_IF_PERMIT Greylisted, please try again later",
        "policy action=PREPEND X-Greylist: …",
        "policy action=DUNNO",
        `milter y ${JSON.stringify("451 4.7.1 Greylisted, please try again later\0")}`,
        "milter c",
        "milter mail c",
      ]);
      for (const answer of received.keys()) assert.ok(expected.has(answer), `unexpected answer ${answer}`);
      const policyDefer = got["policy action=DEFER_IF_PERMIT Greylisted, please try again later"] ?? 0;
      const policyPass = got["policy action=PREPEND X-Greylist: …"] ?? 0;
      const policyDunno = got["policy action=DUNNO"] ?? 0;
      const milterDefer = got[`milter y ${JSON.stringify("451 4.7.1 Greylisted, please try again later\0")}`] ?? 0;
      const milterAccept = got["milter c"] ?? 0;
      assert.ok(policyDefer > 0 && policyPass > 0 && milterDefer > 0 && milterAccept > 0, JSON.stringify(got));

      // Each shim counted what its client received.
      const shim = (proc: GreyfleetProcess, action: string) =>
        scrapedMetric(proc.metricsAddress, SHIM_REQUESTS_TOTAL, { action });
      assert.deepEqual(
        [await shim(policy, "defer"), await shim(policy, "prepend"), await shim(policy, "dunno")],
        [policyDefer, policyPass, policyDunno],
      );
      assert.deepEqual([await shim(milter, "defer"), await shim(milter, "accept")], [milterDefer, milterAccept]);
      // The replicas decided every request the shims did not answer by their own failure mode.
      const decided = async (labels: Record<string, string>) =>
        (await scrapedMetric(replicas[0]?.metricsAddress ?? "", DECISIONS_TOTAL, labels)) +
        (await scrapedMetric(replicas[1]?.metricsAddress ?? "", DECISIONS_TOTAL, labels));
      const shimFailOpen =
        (await scrapedMetric(policy.metricsAddress, SHIM_FAILURE_MODE_ACTIVATIONS_TOTAL)) +
        (await scrapedMetric(milter.metricsAddress, SHIM_FAILURE_MODE_ACTIVATIONS_TOTAL));
      const unavailable = await decided({ reason: "store_unavailable" });
      process.stdout.write(`# soak failure mode: shims ${shimFailOpen}, replicas (store unavailable) ${unavailable}\n`);
      assert.equal(await decided({ action: "defer" }), policyDefer + milterDefer);
      assert.equal((await decided({ action: "accept" })) + shimFailOpen, policyPass + policyDunno + milterAccept);
      // The failover happened under load, and was answered by the failure mode while it lasted.
      assert.ok(killedAt > 0);
      assert.ok(unavailable > 0, "the failover was felt");

      // Resident memory: flat after warm-up. The last minute's peak against the first minute's
      // after warm-up, with room for the allocator's noise.
      process.stdout.write(
        `# soak rss MiB ${JSON.stringify(memory.map((m) => [Math.round(m.at / 1000), ...Object.values(m.rss).map((b) => Math.round(b / 1048576))]))}\n`,
      );
      const window = Math.min(60_000, (SECONDS * 1000 - WARM_UP_MS) / 3);
      const peak = (from: number, to: number, name: string) => {
        const samples = memory.filter((m) => m.at >= from && m.at < to).map((m) => m.rss[name] ?? 0);
        assert.ok(samples.length >= 2, `${name}: ${samples.length} memory samples from ${from} to ${to} ms`);
        return Math.max(...samples);
      };
      for (const name of Object.keys(processes)) {
        const early = peak(WARM_UP_MS, WARM_UP_MS + window, name);
        const late = peak(SECONDS * 1000 - window, SECONDS * 1000 + 1, name);
        assert.ok(late <= early * 1.2 + 8 * 1048576, `${name}: RSS grew from ${early} to ${late} bytes`);
      }
    } finally {
      for (const proc of started.reverse()) await proc.stop();
      await topology.stop();
    }
  });
});
