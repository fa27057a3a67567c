/** The AdminService gRPC handlers over Admin; errors mapped to status codes. */
import type { ServerReadableStream, ServerUnaryCall, ServerWritableStream, sendUnaryData } from "@grpc/grpc-js";
import type {
  AdminServiceServer,
  ExportRequest,
  ExportResponse,
  ImportRequest,
  ImportResponse,
} from "../../contract/gen/greyfleet/v1/admin";
import { describeError, GreyfleetError } from "../../shared/errors";
import type { Logger } from "../../shared/logging";
import { writableAgain } from "../../shared/writable";
import type { Admin } from "../admin";
import type { StateRecord } from "../store/store";
import { type AdminAccess, authorize } from "./admin-auth";
import { fromWireEntry, fromWireRecord, kindName, toWireEntry, toWireRecord } from "./admin-convert";
import { GRPC_STATUS } from "./greylist-service";

/** Entries per AddEntries / RemoveEntries call at most. */
const MAX_ENTRIES_PER_CALL = 100_000;

/** A unary handler from an async function: expected errors become their status, others INTERNAL. */
function unary<Req, Res>(log: Logger, access: AdminAccess, body: (request: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    const refusal = authorize(call, access);
    if (refusal) {
      callback(refusal);
      return;
    }
    body(call.request).then(
      (response) => callback(null, response),
      (thrown: unknown) => {
        const error = GreyfleetError.from(thrown);
        if (error.code === "internal") log.error("admin call failed", { error: describeError(thrown) });
        callback({ code: GRPC_STATUS[error.code], details: error.message });
      },
    );
  };
}

function bounded<T>(items: readonly T[]): readonly T[] {
  if (items.length === 0) throw new GreyfleetError("invalid_argument", "no entries given");
  if (items.length > MAX_ENTRIES_PER_CALL) {
    throw new GreyfleetError("invalid_argument", `more than ${MAX_ENTRIES_PER_CALL} entries in one call`);
  }
  return items;
}

/** Builds the AdminService implementation; every call is authorised against `access` first. */
export function adminService(admin: Admin, log: Logger, access: AdminAccess): AdminServiceServer {
  return {
    listEntries: unary(log, access, async (request) => ({
      entries: (await admin.listEntries(kindName(request.kind))).map(toWireEntry),
    })),
    addEntries: unary(log, access, async (request) => admin.addEntries(bounded(request.entries).map(fromWireEntry))),
    removeEntries: unary(log, access, async (request) =>
      admin.removeEntries(
        bounded(request.entries)
          .map(fromWireEntry)
          .map(({ kind, value }) => ({ kind, value })),
      ),
    ),
    explain: unary(log, access, async (request) => {
      if (!request.check) throw new GreyfleetError("invalid_argument", "check is required");
      const found = await admin.explain(request.check);
      return {
        wouldAnswer: found.response,
        explanation: found.explanation,
        clientNetwork: found.query.network,
        normalisedSender: found.query.sender,
        normalisedRecipient: found.query.recipient,
        firstSeenUnixMs: found.firstSeenMs,
        passedUnixMs: found.passedMs,
        lastSeenUnixMs: found.lastSeenMs,
        clientPasses: found.clientPasses,
      };
    }),
    deleteTriplet: unary(log, access, async (request) => {
      if (!request.check) throw new GreyfleetError("invalid_argument", "check is required");
      return { deleted: await admin.deleteTriplet(request.check) };
    }),
    flushNetwork: unary(log, access, async (request) => {
      const { network, removed } = await admin.flushNetwork(request.clientAddress);
      return { clientNetwork: network, removed };
    }),
    stats: unary(log, access, async () => {
      const stats = await admin.stats();
      return {
        pendingTriplets: stats.pendingTriplets,
        passedTriplets: stats.passedTriplets,
        autoWhitelistedClients: stats.autoWhitelistedClients,
        greytrappedNetworks: stats.greytrappedNetworks,
        outboundPairs: stats.outboundPairs,
        listEntries: stats.lists,
      };
    }),
    export: (call: ServerWritableStream<ExportRequest, ExportResponse>): void => {
      const refusal = authorize(call, access);
      if (refusal) {
        call.emit("error", refusal);
        return;
      }
      void (async () => {
        try {
          for await (const record of admin.exportRecords()) {
            if (call.cancelled || call.destroyed) return; // the caller went away: stop reading the store
            if (!call.write({ record: toWireRecord(record) })) await writableAgain(call);
          }
          call.end();
        } catch (thrown) {
          log.error("export failed", { error: describeError(thrown) });
          call.destroy(new Error("export failed"));
        }
      })();
    },
    import: (
      call: ServerReadableStream<ImportRequest, ImportResponse>,
      callback: sendUnaryData<ImportResponse>,
    ): void => {
      const refusal = authorize(call, access);
      if (refusal) {
        callback(refusal);
        return;
      }
      async function* records(): AsyncIterable<StateRecord> {
        for await (const message of call as AsyncIterable<ImportRequest>) {
          if (!message.record) throw new GreyfleetError("invalid_argument", "an import message without a record");
          yield fromWireRecord(message.record);
        }
        // A cancelled call ends the stream like a finished one: not a complete import.
        if (call.cancelled) throw new GreyfleetError("unavailable", "the client cancelled the import");
      }
      admin.importRecords(records()).then(
        (result) => callback(null, result),
        (thrown: unknown) => {
          const error = GreyfleetError.from(thrown);
          if (error.code === "internal") log.error("import failed", { error: describeError(thrown) });
          callback({ code: GRPC_STATUS[error.code], details: error.message });
        },
      );
    },
  };
}
