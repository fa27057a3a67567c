/** gRPC clients of the decision service for tests: GreylistService, health, reflection. */

import { join } from "node:path";
import {
  credentials,
  loadPackageDefinition,
  Metadata,
  makeGenericClientConstructor,
  type ServiceError,
} from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { service as healthService } from "grpc-health-check";
import {
  type CheckRequest,
  type CheckResponse,
  GreylistServiceClient,
} from "../../services/contract/gen/greyfleet/v1/greylist";

/** A promise-returning GreylistService client. */
export class TestClient {
  readonly raw: GreylistServiceClient;

  constructor(address: string) {
    this.raw = new GreylistServiceClient(address, credentials.createInsecure());
  }

  check(request: CheckRequest, timeoutMs = 5_000): Promise<CheckResponse> {
    return new Promise((resolve, reject) => {
      this.raw.check(request, new Metadata(), { deadline: Date.now() + timeoutMs }, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
  }

  close(): void {
    this.raw.close();
  }
}

/** The gRPC status and details of a failed call. */
export function grpcError(error: unknown): { code: number; details: string } {
  const e = error as ServiceError;
  return { code: e.code, details: e.details };
}

/** grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... */
export function healthStatus(address: string, service = ""): Promise<string> {
  const Client = makeGenericClientConstructor(healthService, "Health");
  const client = new Client(address, credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      (value: { service: string }) => Buffer.from(encodeHealthRequest(value.service)),
      (bytes: Buffer) => decodeHealthStatus(bytes),
      { service },
      { deadline: Date.now() + 3_000 },
      (error: ServiceError | null, status?: string) => {
        client.close();
        error ? reject(error) : resolve(status ?? "UNKNOWN");
      },
    );
  });
}

// grpc.health.v1: HealthCheckRequest { string service = 1; } HealthCheckResponse { ServingStatus status = 1; }
function encodeHealthRequest(service: string): Uint8Array {
  const name = Buffer.from(service);
  return name.length === 0 ? new Uint8Array() : Buffer.concat([Buffer.from([0x0a, name.length]), name]);
}

function decodeHealthStatus(bytes: Buffer): string {
  const value = bytes.length >= 2 && bytes[0] === 0x08 ? (bytes[1] ?? 0) : 0;
  return ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"][value] ?? "UNKNOWN";
}

/** The services the server lists through gRPC server reflection (grpc.reflection.v1). */
export function reflectedServices(address: string): Promise<string[]> {
  const protoDir = join(require.resolve("@grpc/reflection"), "../../proto");
  const definition = loadSync(join(protoDir, "grpc/reflection/v1/reflection.proto"), { includeDirs: [protoDir] });
  // biome-ignore lint/suspicious/noExplicitAny: a dynamically loaded client for one test call
  const pkg = loadPackageDefinition(definition) as any;
  const client = new pkg.grpc.reflection.v1.ServerReflection(address, credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo();
    call.on("data", (response: { listServicesResponse?: { service: { name: string }[] } }) => {
      resolve((response.listServicesResponse?.service ?? []).map((s) => s.name));
      call.end();
      client.close();
    });
    call.on("error", reject);
    call.write({ listServices: "" });
  });
}
