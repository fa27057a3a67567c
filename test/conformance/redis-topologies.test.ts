/**
 * The store conformance suite on a real Redis Cluster (3 masters, 3 replicas) and a real
 * Sentinel setup (1 master, 1 replica, 3 sentinels): the fleet's topologies decide exactly as
 * one Redis server does.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RedisStore } from "../../services/decision/store/redis";
import type { RedisTarget } from "../../services/decision/store/redis-connect";
import { parseStoreUrl } from "../../services/shared/store-url";
import { DEFAULT_POLICY } from "../support/engine";
import { decideTwiceWhileHeld, uniquePrefix } from "../support/redis-server";
import { RedisCluster, RedisSentinel } from "../support/redis-topologies";
import { storeConformance } from "./suite";

function target(url: string): RedisTarget {
  const parsed = parseStoreUrl(url);
  assert.ok(!("error" in parsed) && parsed.kind !== "memory" && parsed.kind !== "sqlite", url);
  return parsed;
}

for (const [name, start] of [
  ["redis cluster", () => RedisCluster.start()],
  ["redis sentinel", () => RedisSentinel.start()],
] as const) {
  let topology: RedisCluster | RedisSentinel;
  let offsetMs = 0;
  const stores: RedisStore[] = [];
  const open = async (): Promise<RedisStore> => {
    const store = new RedisStore({
      target: target(topology.url),
      keyPrefix: uniquePrefix(),
      connectTimeoutMs: 2_000,
      clockOffsetMs: () => offsetMs,
    });
    stores.push(store);
    await store.waitUntilReady(15_000);
    return store;
  };
  storeConformance(
    name,
    async () => {
      topology = await start();
      const store = await open();
      return { store, advance: (ms) => (offsetMs += ms), slackMs: 1_000 };
    },
    async () => {
      for (const store of stores) await store.close();
      await topology.stop();
    },
    open,
  );
}

describe("redis cluster specifics", () => {
  it("spreads triplets over all three masters, each with its network's records in one slot, and does not hold writes back", async () => {
    const cluster = await RedisCluster.start();
    const prefix = uniquePrefix();
    const store = new RedisStore({ target: target(cluster.url), keyPrefix: prefix, connectTimeoutMs: 2_000 });
    try {
      await store.waitUntilReady(15_000);
      for (let i = 0; i < 60; i++) {
        const query = {
          network: `10.${i}.0.0/24`,
          sender: "a@example.org",
          recipient: "b@example.com",
          singleUse: false,
          outbound: true,
        };
        await store.decide(query, DEFAULT_POLICY);
      }
      const masters = await cluster.masters();
      assert.equal(masters.length, 3);
      for (const master of masters) {
        const client = master.client();
        const keys = await client.keys(`${prefix}*`);
        client.disconnect();
        assert.ok(keys.length > 0, `master on port ${master.port} holds triplets`);
      }
      assert.equal((await store.stats(5)).pendingTriplets, 60);

      // While the masters hold a decision (paused writers), a second one for the same master
      // still reaches it: writes are batched per turn, never held behind an unanswered batch.
      const clients = masters.map((master) => master.client());
      const query = { network: "10.200.0.0/24", sender: "a@example.org", singleUse: false, outbound: false };
      try {
        const held = await decideTwiceWhileHeld(clients, (nth) =>
          store.decide({ ...query, recipient: `held${nth}@example.com` }, DEFAULT_POLICY),
        );
        assert.deepEqual(
          held.map((decision) => decision.outcome.kind),
          ["new_triplet", "new_triplet"],
        );
      } finally {
        for (const client of clients) client.disconnect();
      }
    } finally {
      await store.close();
      await cluster.stop();
    }
  });
});
