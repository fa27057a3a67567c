import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type Redis from "ioredis";
import { RedisStore } from "../../services/decision/store/redis";
import { DEFAULT_POLICY } from "../support/engine";
import { decideTwiceWhileHeld, RedisServer, uniquePrefix } from "../support/redis-server";
import { waitFor } from "../support/wait";
import { storeConformance } from "./suite";

let server: RedisServer;
let offsetMs = 0;
const open = async (prefix: string) => {
  const store = new RedisStore({
    target: {
      kind: "redis",
      tls: false,
      nodes: [{ host: "127.0.0.1", port: server.port }],
      masterName: "",
      db: 0,
      username: "",
      password: "",
    },
    keyPrefix: prefix,
    connectTimeoutMs: 2_000,
    clockOffsetMs: () => offsetMs,
  });
  await store.waitUntilReady(5_000);
  return store;
};

{
  let store: RedisStore;
  let twin: RedisStore;
  storeConformance(
    "redis",
    async () => {
      server = await RedisServer.start();
      const prefix = uniquePrefix();
      store = await open(prefix);
      twin = await open(prefix);
      return { store, twin, advance: (ms) => (offsetMs += ms), slackMs: 1_000 };
    },
    async () => {
      await store.close();
      await twin.close();
    },
    () => open(uniquePrefix()),
  );
}

describe("redis store specifics", () => {
  let client: Redis;
  before(async () => {
    server ??= await RedisServer.start();
    client = server.client();
  });
  after(async () => {
    client.disconnect();
    await server.stop();
  });

  const query = {
    network: "192.0.2.0/24",
    sender: "alice@example.org",
    recipient: "bob@example.com",
    singleUse: false,
    outbound: false,
  };

  it("keeps one fixed-length, hashed, hash-tagged key per triplet and one per client", async () => {
    const prefix = uniquePrefix();
    const store = await open(prefix);
    await store.decide(query, DEFAULT_POLICY);
    await store.decide({ ...query, recipient: "carol@example.com" }, DEFAULT_POLICY);
    const keys = (await client.keys(`${prefix}*`)).sort();
    assert.equal(keys.length, 2, "two pending triplets, no client record yet");
    for (const key of keys) {
      assert.match(key, new RegExp(`^${prefix}v1:\\{[0-9a-f]{16}\\}:t:[0-9a-f]{32}$`));
      for (const raw of ["192", "alice", "bob", "carol", "example"]) assert.ok(!key.includes(raw), `${key} has ${raw}`);
    }
    const tags = keys.map((key) => key.slice(key.indexOf("{"), key.indexOf("}") + 1));
    assert.equal(tags[0], tags[1], "both triplets of one network share a hash tag");
    const ttl = await client.pttl(keys[0] as string);
    assert.ok(ttl > DEFAULT_POLICY.retryWindowMs - 5_000 && ttl <= DEFAULT_POLICY.retryWindowMs, `pending TTL ${ttl}`);

    offsetMs += 301_000;
    await store.decide(query, DEFAULT_POLICY);
    const all = await client.keys(`${prefix}*`);
    const clientKey = all.find((key) => key.endsWith(":c"));
    assert.ok(clientKey, "a pass creates the client record");
    assert.equal(clientKey.slice(clientKey.indexOf("{"), clientKey.indexOf("}") + 1), tags[0]);
    const passed = [];
    for (const key of all) if (await client.hexists(key, "p")) passed.push(key);
    assert.equal(passed.length, 1);
    const passedTtl = await client.pttl(passed[0] as string);
    assert.ok(passedTtl > DEFAULT_POLICY.maxAgeMs - 5_000, `passed TTL ${passedTtl}`);
    await store.close();
  });

  it("flushes a network holding more keys than one Lua unpack() takes (9,000 triplets)", async () => {
    const store = await open(uniquePrefix());
    try {
      await Promise.all(
        Array.from({ length: 9_000 }, (_, i) =>
          store.decide({ ...query, recipient: `r${i}@example.com` }, DEFAULT_POLICY),
        ),
      );
      assert.equal(await store.flushNetwork(query.network), 9_000);
      assert.equal((await store.decide(query, DEFAULT_POLICY)).outcome.kind, "new_triplet");
    } finally {
      await store.close();
    }
  });

  it("takes one EVALSHA round trip per decision and survives SCRIPT FLUSH", async () => {
    const store = await open(uniquePrefix());
    await store.decide(query, DEFAULT_POLICY); // loads the script
    await client.config("RESETSTAT");
    for (let i = 0; i < 50; i++) await store.decide({ ...query, recipient: `r${i}@example.com` }, DEFAULT_POLICY);
    const stats = await client.info("commandstats");
    const calls = (command: string) => Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
    assert.equal(calls("evalsha"), 50);
    assert.equal(calls("eval"), 0);
    await client.script("FLUSH");
    const outcome = await store.decide({ ...query, recipient: "after-flush@example.com" }, DEFAULT_POLICY);
    assert.equal(outcome.outcome.kind, "new_triplet", "NOSCRIPT is handled by reloading the script");
    await store.close();
  });

  it("sends one turn's decisions in one write, and later ones without waiting for earlier answers", async () => {
    const store = await open(uniquePrefix());
    try {
      await store.decide(query, DEFAULT_POLICY); // loads the script
      const reads = async () => Number(/total_reads_processed:(\d+)/.exec(await client.info("stats"))?.[1]);
      const before = await reads();
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.decide({ ...query, recipient: `turn${i}@example.com` }, DEFAULT_POLICY),
        ),
      );
      assert.deepEqual(new Set(outcomes.map((o) => o.outcome.kind)), new Set(["new_triplet"]));
      assert.equal((await reads()) - before, 2, "Redis read the 20 decisions at once (and the INFO)");

      // While Redis holds the first decision (paused writers), the second one still reaches it.
      const held = await decideTwiceWhileHeld([client], (nth) =>
        store.decide({ ...query, recipient: `held${nth}@example.com` }, DEFAULT_POLICY),
      );
      assert.deepEqual(
        held.map((decision) => decision.outcome.kind),
        ["new_triplet", "new_triplet"],
      );
    } finally {
      await store.close();
    }
  });

  it("estimates the counts from a random sample of keys", async () => {
    const prefix = uniquePrefix();
    const store = await open(prefix);
    for (let i = 0; i < 100; i++) await store.decide({ ...query, recipient: `sample${i}@example.com` }, DEFAULT_POLICY);
    const exact = await store.stats(5);
    const estimate = await store.sampleStats(5);
    assert.ok(exact.pendingTriplets >= 100);
    // Other tests' keys share this server: the estimate counts only this prefix, scaled by DBSIZE.
    assert.ok(estimate.pendingTriplets > 0, JSON.stringify(estimate));
    assert.equal(estimate.passedTriplets, 0);
    await store.close();
  });

  it("uses the Redis clock: the answer carries Redis TIME", async () => {
    offsetMs = 0;
    const store = await open(uniquePrefix());
    const [seconds] = await client.time();
    const { nowMs } = await store.decide(query, DEFAULT_POLICY);
    assert.ok(Math.abs(nowMs - Number(seconds) * 1000) < 2_000, `${nowMs} vs ${seconds}`);
    await store.close();
  });

  it("fails fast while Redis is down and recovers by itself", async () => {
    const store = await open(uniquePrefix());
    await store.ping();
    await server.stop();
    await assert.rejects(store.decide(query, DEFAULT_POLICY));
    await assert.rejects(store.ping());
    await server.restart();
    await waitFor("the store to reconnect", async () => {
      await store.ping();
      return true;
    });
    assert.equal((await store.decide(query, DEFAULT_POLICY)).outcome.kind, "new_triplet");
    await store.close();
  });
});
