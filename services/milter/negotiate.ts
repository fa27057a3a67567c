/**
 * Option negotiation for the greylisting filter; pure. The answer never claims more than the MTA
 * offered: Postfix fails the milter for a higher version or an action it did not offer, sendmail
 * also for a protocol bit it did not offer, and a no-reply bit the MTA does not honour would
 * leave it waiting for a reply we never send.
 */
import { fail, ok, type Result } from "./codec";
import * as C from "./constants";
import { encodeOptnegReply, type MacroRequest } from "./encode";

/** The MTA's OPTNEG. */
export interface MtaOffer {
  readonly version: number;
  /** SMFIF_* the MTA allows. */
  readonly actions: number;
  /** SMFIP_* the MTA understands. */
  readonly protocol: number;
}

/** Events for which the negotiated SMFIP_NR_* bits forbid any reply. */
export interface NoReplySteps {
  readonly connect: boolean;
  readonly helo: boolean;
  readonly mail: boolean;
  readonly rcpt: boolean;
  readonly data: boolean;
  readonly header: boolean;
  readonly eoh: boolean;
  readonly body: boolean;
  readonly unknown: boolean;
}

/** What was agreed, and the reply packet that says so. */
export interface Negotiated {
  readonly version: number;
  readonly actions: number;
  readonly protocol: number;
  readonly macros: readonly MacroRequest[];
  readonly noReply: NoReplySteps;
  /** SMFIF_ADDHDRS granted: the X-Greylist header may be added at end of message. */
  readonly canAddHeader: boolean;
  /** The MTA sends DATA (version 4+): the null sender is decided there, otherwise at end of message. */
  readonly hasDataStep: boolean;
  /** The whole OPTNEG reply packet. */
  readonly reply: Buffer;
}

/**
 * Steps we want: skip headers, body, end of headers and unknown commands; no replies to CONNECT
 * and HELO. Not NODATA: the null sender is greylisted at DATA. Not NR_MAIL/NR_RCPT/NR_DATA:
 * those replies carry the decision. Not RCPT_REJ: recipients the MTA rejected are not ours.
 */
export const GREYLIST_PROTOCOL =
  C.SMFIP_NOHDRS | C.SMFIP_NOBODY | C.SMFIP_NOEOH | C.SMFIP_NOUNKNOWN | C.SMFIP_NR_CONN | C.SMFIP_NR_HELO;

/** Actions we want: add one X-Greylist header, and request macros where the MTA allows it. */
export const GREYLIST_ACTIONS = C.SMFIF_ADDHDRS | C.SMFIF_SETSYMLIST;

/** Macros requested with SMFIF_SETSYMLIST; they replace the MTA's per-milter defaults. */
export const GREYLIST_MACROS: readonly MacroRequest[] = [
  { stage: C.SMFIM_CONNECT, names: "{client_addr} {client_name} {daemon_name} j" },
  { stage: C.SMFIM_ENVFROM, names: "{auth_authen} {mail_addr} i" },
  { stage: C.SMFIM_ENVRCPT, names: "{rcpt_addr} i" },
  { stage: C.SMFIM_DATA, names: "i" },
  { stage: C.SMFIM_EOM, names: "i" },
];

// Which SMFIP_* bits exist in each protocol version (Postfix knows 2, 3, 4 and 6): v3 added
// UNKNOWN, v4 DATA, v6 SKIP, RCPT_REJ, the NR_* bits and HDR_LEADSPC. A bit the answered version
// lacks is never requested, even if an MTA offers it.
function stepsOfVersion(version: number): number {
  if (version >= 6) return C.SMFI_CURR_PROT;
  if (version >= 4) return C.SMFI_V2_PROT | C.SMFIP_NOUNKNOWN | C.SMFIP_NODATA;
  if (version >= 3) return C.SMFI_V2_PROT | C.SMFIP_NOUNKNOWN;
  return C.SMFI_V2_PROT;
}

function actionsOfVersion(version: number): number {
  return version >= 6 ? C.SMFI_CURR_ACTS : C.SMFI_V2_ACTS;
}

/** Answers the MTA's OPTNEG for the greylisting profile; refuses versions below 2. */
export function negotiate(offer: MtaOffer): Result<Negotiated> {
  if (offer.version < C.SMFI_MIN_PROT_VERSION) {
    return fail("unsupported_version", `MTA milter protocol version ${offer.version} is below 2`);
  }
  const version = Math.min(C.SMFI_PROT_VERSION, offer.version);
  const actions = GREYLIST_ACTIONS & offer.actions & actionsOfVersion(version);
  const protocol = GREYLIST_PROTOCOL & offer.protocol & stepsOfVersion(version);
  const macros = (actions & C.SMFIF_SETSYMLIST) !== 0 ? GREYLIST_MACROS : [];
  const reply = encodeOptnegReply({ version, actions, protocol, macros });
  if (!reply.ok) return reply;
  const has = (bit: number): boolean => (protocol & bit) !== 0;
  return ok({
    version,
    actions,
    protocol,
    macros,
    noReply: {
      connect: has(C.SMFIP_NR_CONN),
      helo: has(C.SMFIP_NR_HELO),
      mail: has(C.SMFIP_NR_MAIL),
      rcpt: has(C.SMFIP_NR_RCPT),
      data: has(C.SMFIP_NR_DATA),
      header: has(C.SMFIP_NR_HDR),
      eoh: has(C.SMFIP_NR_EOH),
      body: has(C.SMFIP_NR_BODY),
      unknown: has(C.SMFIP_NR_UNKN),
    },
    canAddHeader: (actions & C.SMFIF_ADDHDRS) !== 0,
    hasDataStep: version >= 4 && !has(C.SMFIP_NODATA),
    reply: reply.value,
  });
}
