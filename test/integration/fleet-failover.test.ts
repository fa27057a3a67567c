/**
 * Two decision replicas on a real Redis Cluster (3 masters + 3 replicas) and on a real Sentinel
 * setup, with a policy shim and a milter shim each balancing over both, under continuous load
 * (through gRPC and through both shims) while the master holding a greylisted triplet is killed:
 * no process crashes, nothing hangs, calls in the gap follow the failure mode, full service
 * returns within 15 s, and the triplet greylisted before the kill passes on its retry after it.
 *
 * One real wait: the greylisting delay (--delay 2s), measured by Redis TIME in two processes.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { Reason } from "../../services/contract/gen/greyfleet/v1/greylist";
import { networkId, RedisKeys, tripletId } from "../../services/decision/store/keys";
import { rcpt } from "../support/engine";
import { GreyfleetProcess } from "../support/greyfleet-process";
import { TestClient } from "../support/grpc-clients";
import { formatReply, GREYLISTED, ipv4, type MilterClient, replyCode, smtpSession } from "../support/milter-client";
import { PolicyClient } from "../support/policy-client";
import { uniquePrefix } from "../support/redis-server";
import { RedisCluster, RedisSentinel } from "../support/redis-topologies";
import { startAll } from "../support/start-all";
import { waitFor } from "../support/wait";

/** Checks through both replicas until stopped; counts answers by reason. */
function load(clients: readonly TestClient[]) {
  const counts = new Map<Reason, number>();
  let stopped = false;
  let errors = 0;
  let lastUnavailableMs = 0;
  const running = (async () => {
    for (let i = 0; !stopped; i++) {
      const client = clients[i % clients.length] as TestClient;
      try {
        const response = await client.check(
          rcpt({ clientAddress: `198.18.${i % 200}.1`, recipient: `load${i}@example.com` }),
          2_000,
        );
        counts.set(response.reason, (counts.get(response.reason) ?? 0) + 1);
        if (response.reason === Reason.REASON_STORE_UNAVAILABLE) lastUnavailableMs = Date.now();
      } catch {
        errors++;
      }
      await delay(5);
    }
  })();
  return {
    counts,
    get errors() {
      return errors;
    },
    get lastUnavailableMs() {
      return lastUnavailableMs;
    },
    stop: async () => {
      stopped = true;
      await running;
    },
  };
}

const DEFER = "action=DEFER_IF_PERMIT Greylisted, please try again later";

/** A shim request that takes longer than this is counted as hung. */
const HUNG_MS = 3_000;

/** One answer, or "hung" after HUNG_MS. */
async function bounded(answer: Promise<string>): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve("hung"), HUNG_MS);
  });
  try {
    return await Promise.race([answer, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/** New triplets through a policy shim and a milter shim until stopped; counts answers by text. */
function shimLoad(policyAddress: string, milterAddress: string) {
  const answers = new Map<string, number>();
  const count = (answer: string) => answers.set(answer, (answers.get(answer) ?? 0) + 1);
  let stopped = false;
  const policy = (async () => {
    const client = await PolicyClient.open(policyAddress);
    for (let i = 0; !stopped; i++) {
      count(`policy ${await bounded(client.ask({ client_address: "198.19.1.1", recipient: `p${i}@example.com` }))}`);
      await delay(5);
    }
    client.close();
  })();
  const milter = (async () => {
    let session: MilterClient | undefined;
    for (let i = 0; !stopped; i++) {
      if (!session) {
        session = await smtpSession(milterAddress, ipv4("198.19.2.1"));
        count(`milter mail ${formatReply(await session.mail("load@example.org"))}`);
      }
      const reply = await bounded(session.rcpt(`m${i}@example.com`).then(formatReply, () => "hung"));
      count(`milter ${reply}`);
      if (reply === "hung") session = undefined; // a fresh connection, as an MTA would after a timeout
      await delay(5);
    }
    await session?.quit();
  })();
  return {
    answers,
    stop: async () => {
      stopped = true;
      await Promise.all([policy, milter]);
    },
  };
}

async function failover(name: string, start: () => Promise<RedisCluster | RedisSentinel>) {
  const topology = await start();
  const processes: GreyfleetProcess[] = [];
  const clients: TestClient[] = [];
  /** The load loops, stopped however the test ends (each stops by itself when its flag is set). */
  const loads: { stop(): Promise<void> }[] = [];
  try {
    const prefix = uniquePrefix();
    const args = [
      "serve",
      "--store",
      topology.url,
      "--redis-key-prefix",
      prefix,
      "--delay",
      "2s",
      "--listen",
      "127.0.0.1:0",
    ].concat(["--metrics-listen", "", "--store-timeout", "300ms", "--health-interval", "200ms"]);
    const replicas = await startAll([GreyfleetProcess.start(args), GreyfleetProcess.start(args)]);
    processes.push(...replicas);
    clients.push(...replicas.map((proc) => new TestClient(proc.grpcAddress)));
    const both = replicas.map((proc) => proc.grpcAddress).join(",");
    const local = ["--listen", "127.0.0.1:0", "--metrics-listen", "", "--decision", both];
    const shims = await startAll([
      GreyfleetProcess.start(["policy", ...local, "--mta-id", "mx-a"]),
      GreyfleetProcess.start(["milter", ...local, "--mta-id", "mx-b"]),
    ]);
    processes.push(...shims);
    const triplet = rcpt({ clientAddress: "192.0.2.33", sender: "before@example.org", recipient: "kill@example.com" });
    assert.equal((await clients[0]?.check(triplet))?.reason, Reason.REASON_NEW_TRIPLET);
    // Find the master holding the triplet, and make sure its replica has the write (asynchronous
    // replication may lose the last writes of a killed master: one more greylisting round).
    const key = new RedisKeys(prefix).triplet(
      networkId("192.0.2.0/24"),
      tripletId({
        network: "192.0.2.0/24",
        sender: "before@example.org",
        recipient: "kill@example.com",
      }),
    );
    const victim =
      topology instanceof RedisCluster
        ? await (async () => {
            for (const master of await topology.masters()) {
              const client = master.client();
              // A master without the key's slot answers MOVED.
              const exists = await client.exists(key).catch(() => 0);
              if (exists) await client.call("WAIT", "1", "2000");
              client.disconnect();
              if (exists) return master;
            }
            throw new Error("no master holds the triplet");
          })()
        : topology.master;
    if (topology instanceof RedisSentinel) {
      const client = topology.master.client();
      await client.call("WAIT", "1", "2000");
      client.disconnect();
    }

    const traffic = load(clients);
    const shimTraffic = shimLoad(
      shims[0]?.logged(/policy server listening/, "policy") ?? "",
      shims[1]?.logged(/milter server listening/, "milter") ?? "",
    );
    loads.push(traffic, shimTraffic);
    await delay(500);
    const killed = Date.now();
    await victim.kill();
    await waitFor(
      `${name}: decisions to come from the store again`,
      async () => {
        // The probe's network is the triplet's: its keys are in the killed master's slot.
        const response = await clients[1]?.check(
          rcpt({ clientAddress: "192.0.2.50", recipient: `probe${Date.now()}@example.com` }),
        );
        return response?.reason === Reason.REASON_NEW_TRIPLET;
      },
      20_000,
      100,
    );
    const recoveredMs = Date.now() - killed;
    await delay(1_000);
    await Promise.all([traffic.stop(), shimTraffic.stop()]);
    assert.ok(recoveredMs < 15_000, `${name}: full service returned after ${recoveredMs} ms`);
    for (const proc of [...replicas, ...shims]) assert.equal(proc.child.exitCode, null, "no process crashed");
    // Through the shims: greylisted, or (store down: the replicas' failure mode, open) passed.
    const shimAnswers = Object.fromEntries(shimTraffic.answers);
    const expected = new Set([
      `policy ${DEFER}`,
      "policy action=DUNNO",
      `milter ${formatReply(replyCode(GREYLISTED))}`,
      "milter c",
      "milter mail c",
    ]);
    for (const answer of shimTraffic.answers.keys()) assert.ok(expected.has(answer), JSON.stringify(shimAnswers));
    assert.ok(
      (shimAnswers[`policy ${DEFER}`] ?? 0) > 0 &&
        (shimAnswers[`milter ${formatReply(replyCode(GREYLISTED))}`] ?? 0) > 0,
    );
    assert.equal(traffic.errors, 0, "every call was answered (by the store or the failure mode)");
    const normal =
      (traffic.counts.get(Reason.REASON_NEW_TRIPLET) ?? 0) + (traffic.counts.get(Reason.REASON_TOO_EARLY) ?? 0);
    assert.ok(normal > 0, JSON.stringify([...traffic.counts]));
    process.stdout.write(
      `# ${name}: recovered ${recoveredMs} ms after the kill; answers ${JSON.stringify(Object.fromEntries(traffic.counts))}; through the shims ${JSON.stringify(shimAnswers)}\n`,
    );

    await delay(2_000); // the greylisting delay, by the store's clock (see the file's header)
    const retry = await clients[1]?.check(triplet);
    assert.equal(retry?.reason, Reason.REASON_PASSED_AFTER_RETRY, `the retry got ${JSON.stringify(retry)}`);
  } finally {
    await Promise.all(loads.map((running) => running.stop()));
    for (const client of clients) client.close();
    for (const proc of processes.reverse()) await proc.stop();
    await topology.stop();
  }
}

describe("fleet failover", () => {
  it("Redis Cluster: a master is killed under load", () => failover("cluster", () => RedisCluster.start()));
  it("Redis Sentinel: the master is killed under load", () => failover("sentinel", () => RedisSentinel.start()));
});
