/**
 * Health while the decision service stops: once it is shutting down, a store-health report that
 * arrives late (a probe that was under way at SIGTERM) does not mark GreylistService SERVING
 * again. The probe's timing cannot be arranged from outside, so the server is driven in-process.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CheckResponse } from "../../services/contract/gen/greyfleet/v1/greylist";
import type { Admin } from "../../services/decision/admin";
import { startDecisionServer } from "../../services/decision/rpc/server";
import { createLogger } from "../../services/shared/logging";
import { healthStatus } from "../support/grpc-clients";

const GREYLIST = "greyfleet.v1.GreylistService";

describe("health during shutdown", () => {
  it("stays NOT_SERVING after setShuttingDown, whatever the store health reported later", async () => {
    const engine = {
      check: async () => CheckResponse.fromPartial({}),
      reportOutgoing: async () => 0,
    };
    const server = await startDecisionServer(
      "127.0.0.1:0",
      engine,
      {} as Admin, // never called here
      {
        tls: { certFile: "", keyFile: "", clientCaFile: "" },
        tlsReloadMs: 60_000,
        admin: { token: "", clientNames: [] },
      },
      createLogger({ level: "error", format: "text" }, () => {}),
      { maxChecksInFlight: 10, maxCheckStreams: 10 },
    );
    try {
      server.setStoreHealth(true);
      assert.equal(await healthStatus(server.address, GREYLIST), "SERVING");
      server.setShuttingDown();
      server.setStoreHealth(true); // the late report
      assert.deepEqual(
        [await healthStatus(server.address), await healthStatus(server.address, GREYLIST)],
        ["NOT_SERVING", "NOT_SERVING"],
      );
    } finally {
      server.server.forceShutdown();
    }
  });
});
