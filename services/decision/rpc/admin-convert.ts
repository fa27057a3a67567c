/** Conversions between the admin contract's messages and the store's and lists' values. */
import {
  type ListEntry,
  ListKind,
  listKindFromJSON,
  listKindToJSON,
  type StateRecord as WireRecord,
} from "../../contract/gen/greyfleet/v1/admin";
import { GreyfleetError } from "../../shared/errors";
import type { ListEntryValue, ListKindName } from "../domain/lists";
import type { StateRecord } from "../store/store";

/** The list kind's name ("client_whitelist") of a ListKind, or undefined for UNSPECIFIED. */
export function kindName(kind: ListKind): ListKindName | undefined {
  if (kind === ListKind.LIST_KIND_UNSPECIFIED) return undefined;
  const name = listKindToJSON(kind);
  if (name === "UNRECOGNIZED") throw new GreyfleetError("invalid_argument", `list kind ${kind} is unknown`);
  return name.replace("LIST_KIND_", "").toLowerCase() as ListKindName;
}

/** The ListKind of a list kind's name. */
export function kindOf(name: ListKindName): ListKind {
  return listKindFromJSON(`LIST_KIND_${name.toUpperCase()}`);
}

/** A wire entry as a list entry; the kind must be given. */
export function fromWireEntry(entry: ListEntry): ListEntryValue {
  const kind = kindName(entry.kind);
  if (kind === undefined) throw new GreyfleetError("invalid_argument", `entry "${entry.value}" has no list kind`);
  return {
    kind,
    value: entry.value,
    expiresAtMs: entry.expiresAtUnixMs,
    comment: entry.comment,
    createdAtMs: entry.createdAtUnixMs,
    source: entry.source,
  };
}

/** A list entry on the wire. */
export function toWireEntry(entry: ListEntryValue): ListEntry {
  return {
    kind: kindOf(entry.kind),
    value: entry.value,
    expiresAtUnixMs: entry.expiresAtMs,
    comment: entry.comment,
    createdAtUnixMs: entry.createdAtMs,
    source: entry.source,
  };
}

/** A store record on the wire. */
export function toWireRecord(record: StateRecord): WireRecord {
  switch (record.type) {
    case "triplet":
      return {
        triplet: {
          id: record.id,
          networkId: record.networkId,
          firstSeenUnixMs: record.firstSeenMs,
          passedUnixMs: record.passedMs,
          lastSeenUnixMs: record.lastSeenMs,
          expiresAtUnixMs: record.expiresMs,
        },
      };
    case "client":
      return {
        client: {
          networkId: record.networkId,
          passes: record.passes,
          lastCountedUnixMs: record.lastCountedMs,
          lastSeenUnixMs: record.lastSeenMs,
          expiresAtUnixMs: record.expiresMs,
        },
      };
    case "block":
      return { block: { networkId: record.networkId, expiresAtUnixMs: record.expiresMs } };
    case "outbound":
      return { outbound: { id: record.id, expiresAtUnixMs: record.expiresMs } };
    case "entry":
      return { entry: toWireEntry(record.entry) };
  }
}

const HEX16 = /^[0-9a-f]{16}$/;
const HEX32 = /^[0-9a-f]{32}$/;

function checkIds(id: string | undefined, networkId: string | undefined): void {
  if (id !== undefined && !HEX32.test(id))
    throw new GreyfleetError("invalid_argument", `record id "${id}" is not 32 hex digits`);
  if (networkId !== undefined && !HEX16.test(networkId)) {
    throw new GreyfleetError("invalid_argument", `network id "${networkId}" is not 16 hex digits`);
  }
}

/** A wire record as a store record; malformed ids or an empty record are invalid arguments. */
export function fromWireRecord(record: WireRecord): StateRecord {
  if (record.triplet) {
    const t = record.triplet;
    checkIds(t.id, t.networkId);
    return {
      type: "triplet",
      id: t.id,
      networkId: t.networkId,
      firstSeenMs: t.firstSeenUnixMs,
      passedMs: t.passedUnixMs,
      lastSeenMs: t.lastSeenUnixMs,
      expiresMs: t.expiresAtUnixMs,
    };
  }
  if (record.client) {
    const c = record.client;
    checkIds(undefined, c.networkId);
    return {
      type: "client",
      networkId: c.networkId,
      passes: c.passes,
      lastCountedMs: c.lastCountedUnixMs,
      lastSeenMs: c.lastSeenUnixMs,
      expiresMs: c.expiresAtUnixMs,
    };
  }
  if (record.block) {
    checkIds(undefined, record.block.networkId);
    return { type: "block", networkId: record.block.networkId, expiresMs: record.block.expiresAtUnixMs };
  }
  if (record.outbound) {
    checkIds(record.outbound.id, undefined);
    return { type: "outbound", id: record.outbound.id, expiresMs: record.outbound.expiresAtUnixMs };
  }
  if (record.entry) return { type: "entry", entry: fromWireEntry(record.entry) };
  throw new GreyfleetError("invalid_argument", "an empty state record");
}
