/** A promise-returning client of AdminService, for the `greyfleet admin` command. */
import { type ChannelCredentials, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import {
  type AddEntriesResponse,
  AdminServiceClient,
  type ExplainResponse,
  type FlushNetworkResponse,
  type ImportResponse,
  type ListEntry,
  type ListKind,
  type RemoveEntriesResponse,
  type StateRecord,
  type StatsResponse,
} from "../contract/gen/greyfleet/v1/admin";
import type { CheckRequest } from "../contract/gen/greyfleet/v1/greylist";

/** How long one admin call may take, ms (Stats and Export scan the whole state). */
const CALL_TIMEOUT_MS = 120_000;

/**
 * Largest reply taken, bytes: ListEntries answers every entry in one message, and a store may hold
 * many imports of 100,000 entries (about 45 bytes each, up to about 650 with comment and source).
 */
const MAX_REPLY_BYTES = 512 * 1024 * 1024;

/** A failed admin call: its gRPC status details are safe to show. */
export class AdminCallError extends Error {}

function call<Res>(start: (done: (error: ServiceError | null, response: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) =>
    start((error, response) =>
      error ? reject(new AdminCallError(error.details || error.message)) : resolve(response),
    ),
  );
}

/** AdminService at one address. */
export class AdminClient {
  private readonly client: AdminServiceClient;
  private readonly metadata = new Metadata();

  constructor(
    address: string,
    transport: { credentials: ChannelCredentials; options: Record<string, string>; token: string } = {
      credentials: credentials.createInsecure(),
      options: {},
      token: "",
    },
  ) {
    this.client = new AdminServiceClient(address, transport.credentials, {
      "grpc.max_receive_message_length": MAX_REPLY_BYTES,
      ...transport.options,
    });
    if (transport.token !== "") this.metadata.set("authorization", `Bearer ${transport.token}`);
  }

  private options() {
    return { deadline: Date.now() + CALL_TIMEOUT_MS };
  }

  listEntries(kind: ListKind): Promise<ListEntry[]> {
    return call<{ entries: ListEntry[] }>((done) =>
      this.client.listEntries({ kind }, this.metadata, this.options(), done),
    ).then((r) => r.entries);
  }

  addEntries(entries: ListEntry[]): Promise<AddEntriesResponse> {
    return call((done) => this.client.addEntries({ entries }, this.metadata, this.options(), done));
  }

  removeEntries(entries: ListEntry[]): Promise<RemoveEntriesResponse> {
    return call((done) => this.client.removeEntries({ entries }, this.metadata, this.options(), done));
  }

  explain(check: CheckRequest): Promise<ExplainResponse> {
    return call((done) => this.client.explain({ check }, this.metadata, this.options(), done));
  }

  deleteTriplet(check: CheckRequest): Promise<boolean> {
    return call<{ deleted: boolean }>((done) =>
      this.client.deleteTriplet({ check }, this.metadata, this.options(), done),
    ).then((r) => r.deleted);
  }

  flushNetwork(clientAddress: string): Promise<FlushNetworkResponse> {
    return call((done) => this.client.flushNetwork({ clientAddress }, this.metadata, this.options(), done));
  }

  stats(): Promise<StatsResponse> {
    return call((done) => this.client.stats({}, this.metadata, this.options(), done));
  }

  /** Every record of the state, in the order the service sends them. */
  async *export(): AsyncIterable<StateRecord> {
    const stream = this.client.export({}, this.metadata, this.options());
    try {
      for await (const message of stream as AsyncIterable<{ record?: StateRecord }>) {
        if (message.record) yield message.record;
      }
    } catch (error) {
      throw new AdminCallError((error as ServiceError).details || String(error));
    }
  }

  /** Sends records; resolves with the service's count. */
  import(records: AsyncIterable<StateRecord>): Promise<ImportResponse> {
    return new Promise((resolve, reject) => {
      const stream = this.client.import(this.metadata, this.options(), (error, response) =>
        error ? reject(new AdminCallError(error.details || error.message)) : resolve(response),
      );
      void (async () => {
        for await (const record of records) {
          if (!stream.write({ record })) await new Promise((drained) => stream.once("drain", drained));
        }
        stream.end();
      })().catch((error: unknown) => {
        stream.cancel();
        reject(error);
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
