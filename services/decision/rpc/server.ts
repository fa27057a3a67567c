/**
 * The decision service's gRPC server: GreylistService, grpc.health.v1 (NOT_SERVING while the
 * store is unreachable) and server reflection.
 */

import { Server } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import { AdminServiceService } from "../../contract/gen/greyfleet/v1/admin";
import { GreylistServiceService } from "../../contract/gen/greyfleet/v1/greylist";
import type { Logger } from "../../shared/logging";
import { projectFile } from "../../shared/paths";
import { type ServerTlsFiles, serverCredentials } from "../../shared/tls";
import type { Admin } from "../admin";
import type { AdminAccess } from "./admin-auth";
import { adminService } from "./admin-service";
import { type DecisionEngine, type GreylistServiceOptions, greylistService } from "./greylist-service";

/** The service name clients and health checks use. */
export const GREYLIST_SERVICE_NAME = "greyfleet.v1.GreylistService";

/**
 * A CheckRequest is a few hundred bytes and a CheckStream message carries at most 256 of them
 * (each field bounded by validation): anything over this is refused before decoding.
 */
const MAX_MESSAGE_BYTES = 1024 * 1024;

/** A running gRPC server and its health reporting. */
export interface DecisionServer {
  readonly server: Server;
  /** The bound "host:port" (the real port when asked for port 0). */
  readonly address: string;
  /**
   * Sets the health of GreylistService: SERVING while the store answers. The server as a whole
   * ("") stays SERVING while the process runs, even without its store (it answers by the
   * failure mode then): a liveness probe must not restart it for an outage of Redis.
   */
  setStoreHealth(up: boolean): void;
  /** Marks the server and GreylistService NOT_SERVING: it is shutting down. */
  setShuttingDown(): void;
  /** Ends every open CheckStream once its in-flight checks are answered. */
  drainStreams(): Promise<void>;
}

/** How the server is reached and who may administer it. */
export interface ServerSecurity {
  readonly tls: ServerTlsFiles;
  /** How often certificate files are re-read, ms. */
  readonly tlsReloadMs: number;
  readonly admin: AdminAccess;
}

/** Creates, binds and starts the gRPC server on `listen` (HOST:PORT). */
export async function startDecisionServer(
  listen: string,
  engine: DecisionEngine,
  admin: Admin,
  security: ServerSecurity,
  log: Logger,
  /** How much GreylistService takes on at once, and who hears of streams and refusals. */
  limits: GreylistServiceOptions,
): Promise<DecisionServer> {
  const server = new Server({
    "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.enable_channelz": 0,
    "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  });
  const service = greylistService(engine, log, limits);
  server.addService(GreylistServiceService, service.implementation);
  server.addService(AdminServiceService, adminService(admin, log.child("admin"), security.admin));

  const health = new HealthImplementation({ "": "SERVING", [GREYLIST_SERVICE_NAME]: "NOT_SERVING" });
  let shuttingDown = false;
  health.addToServer(server);

  const definition = loadSync(
    [projectFile("proto/greyfleet/v1/greylist.proto"), projectFile("proto/greyfleet/v1/admin.proto")],
    {
      includeDirs: [projectFile("proto")],
    },
  );
  new ReflectionService(definition).addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen, serverCredentials(security.tls, security.tlsReloadMs), (error, bound) =>
      error ? reject(new Error(`--listen ${listen}: ${error.message}`)) : resolve(bound),
    );
  });
  const host = listen.slice(0, listen.lastIndexOf(":"));
  return {
    server,
    address: `${host}:${port}`,
    drainStreams: service.drain,
    setStoreHealth(up: boolean): void {
      // A probe that was under way at SIGTERM must not mark a stopping service SERVING again.
      if (shuttingDown) return;
      const state: ServingStatus = up ? "SERVING" : "NOT_SERVING";
      health.setStatus(GREYLIST_SERVICE_NAME, state);
    },
    setShuttingDown(): void {
      shuttingDown = true;
      health.setStatus("", "NOT_SERVING");
      health.setStatus(GREYLIST_SERVICE_NAME, "NOT_SERVING");
    },
  };
}
