/**
 * Milter wire constants, named as in sendmail's libmilter `mfdef.h` / `mfapi.h` (8.17.1.9), so the
 * code can be read side by side with the spec and other implementations.
 */

/** Highest protocol version we speak (`SMFI_PROT_VERSION`); the reply is min(this, MTA's). */
export const SMFI_PROT_VERSION = 6;
/** Lowest MTA version we accept; libmilter refuses below 2 as well (`engine.c:884`). */
export const SMFI_MIN_PROT_VERSION = 2;
/** libmilter's cap on one packet's data, bytes (`MILTER_MAX_DATA_SIZE`); also the body chunk size. */
export const MILTER_MAX_DATA_SIZE = 65535;
/** Bytes of the frame header: a big-endian uint32 length counting the command byte plus data. */
export const MILTER_LEN_BYTES = 4;

// Commands MTA -> filter (`SMFIC_*`, mfdef.h:47-62), one ASCII byte each.
/** Option negotiation: u32 version, u32 actions, u32 protocol. */
export const SMFIC_OPTNEG = 0x4f; // 'O'
/** Macros for the command named by the first data byte. Never answered. */
export const SMFIC_MACRO = 0x44; // 'D'
/** SMTP connection: hostname, family, port, address. */
export const SMFIC_CONNECT = 0x43; // 'C'
/** HELO/EHLO argument. */
export const SMFIC_HELO = 0x48; // 'H'
/** MAIL FROM: sender then ESMTP arguments. */
export const SMFIC_MAIL = 0x4d; // 'M'
/** RCPT TO: recipient then ESMTP arguments. */
export const SMFIC_RCPT = 0x52; // 'R'
/** DATA command (protocol v4+). */
export const SMFIC_DATA = 0x54; // 'T'
/** One message header: name, value. */
export const SMFIC_HEADER = 0x4c; // 'L'
/** End of headers. */
export const SMFIC_EOH = 0x4e; // 'N'
/** One body chunk, raw bytes. */
export const SMFIC_BODY = 0x42; // 'B'
/** End of message: the only point where header modifications are allowed; always answered. */
export const SMFIC_BODYEOB = 0x45; // 'E'
/** Abort the current message (RSET, end of transaction). Never answered. */
export const SMFIC_ABORT = 0x41; // 'A'
/** Close the milter connection. Never answered. */
export const SMFIC_QUIT = 0x51; // 'Q'
/** QUIT, but a new SMTP connection follows on the same socket (v6; unused by Postfix and sendmail). */
export const SMFIC_QUIT_NC = 0x4b; // 'K'
/** An SMTP command the MTA did not recognise (v3+). */
export const SMFIC_UNKNOWN = 0x55; // 'U'

// Replies filter -> MTA (`SMFIR_*`, mfdef.h:64-84).
/** Continue; at end of message it means accept. Must carry no data. */
export const SMFIR_CONTINUE = 0x63; // 'c'
/** Accept the message (at CONNECT/HELO: the whole session). */
export const SMFIR_ACCEPT = 0x61; // 'a'
/** Reject with the MTA's default 5xx text. */
export const SMFIR_REJECT = 0x72; // 'r'
/** Temporary failure with the MTA's default 4xx text. */
export const SMFIR_TEMPFAIL = 0x74; // 't'
/** Full SMTP reply text, NUL-terminated, '%' doubled. */
export const SMFIR_REPLYCODE = 0x79; // 'y'
/** Discard the message silently. */
export const SMFIR_DISCARD = 0x64; // 'd'
/** Keep-alive while the MTA waits (Postfix: any stage; sendmail: end of message only). */
export const SMFIR_PROGRESS = 0x70; // 'p'
/** Skip further events of the same kind (v6, needs SMFIP_SKIP). */
export const SMFIR_SKIP = 0x73; // 's'
/** Add a header at the end: name\0value\0. End of message only, needs SMFIF_ADDHDRS. */
export const SMFIR_ADDHEADER = 0x68; // 'h'
/** Insert a header at an index. */
export const SMFIR_INSHEADER = 0x69; // 'i'
/** Change or delete a header. */
export const SMFIR_CHGHEADER = 0x6d; // 'm'
/** Put the message in the hold queue. */
export const SMFIR_QUARANTINE = 0x71; // 'q'
/** Add a recipient. */
export const SMFIR_ADDRCPT = 0x2b; // '+'
/** Delete a recipient. */
export const SMFIR_DELRCPT = 0x2d; // '-'
/** Add a recipient with ESMTP arguments. */
export const SMFIR_ADDRCPT_PAR = 0x32; // '2'
/** Change the envelope sender. */
export const SMFIR_CHGFROM = 0x65; // 'e'
/** Replace the body. */
export const SMFIR_REPLBODY = 0x62; // 'b'
/** 421 and disconnect. */
export const SMFIR_SHUTDOWN = 0x34; // '4'
/** Connection failure (not handled by Postfix; never sent). */
export const SMFIR_CONN_FAIL = 0x66; // 'f'
/** Unused on the wire: macro lists travel inside the OPTNEG reply. */
export const SMFIR_SETSYMLIST = 0x6c; // 'l'

// Actions the filter may take (`SMFIF_*`, mfapi.h:183-197), bits of the OPTNEG actions word.
/** SMFIR_ADDHEADER / SMFIR_INSHEADER allowed. */
export const SMFIF_ADDHDRS = 0x001;
/** Body replacement allowed. */
export const SMFIF_CHGBODY = 0x002;
/** Adding recipients allowed. */
export const SMFIF_ADDRCPT = 0x004;
/** Deleting recipients allowed. */
export const SMFIF_DELRCPT = 0x008;
/** Changing headers allowed. */
export const SMFIF_CHGHDRS = 0x010;
/** Quarantine allowed. */
export const SMFIF_QUARANTINE = 0x020;
/** Changing the envelope sender allowed (v6). */
export const SMFIF_CHGFROM = 0x040;
/** Adding recipients with arguments allowed (v6). */
export const SMFIF_ADDRCPT_PAR = 0x080;
/** The OPTNEG reply may carry per-stage macro lists (v6). */
export const SMFIF_SETSYMLIST = 0x100;
/** Actions of protocol v2 (`SMFI_V2_ACTS`). */
export const SMFI_V2_ACTS = 0x03f;
/** Actions of protocol v6 (`SMFI_CURR_ACTS`). */
export const SMFI_CURR_ACTS = 0x1ff;

// Protocol steps (`SMFIP_*`, mfdef.h:86-111), bits of the OPTNEG protocol word.
/** Don't send CONNECT. */
export const SMFIP_NOCONNECT = 0x00000001;
/** Don't send HELO. */
export const SMFIP_NOHELO = 0x00000002;
/** Don't send MAIL. */
export const SMFIP_NOMAIL = 0x00000004;
/** Don't send RCPT. */
export const SMFIP_NORCPT = 0x00000008;
/** Don't send body chunks. */
export const SMFIP_NOBODY = 0x00000010;
/** Don't send headers. */
export const SMFIP_NOHDRS = 0x00000020;
/** Don't send end of headers. */
export const SMFIP_NOEOH = 0x00000040;
/** No reply to each header (also called SMFIP_NOHREPL). */
export const SMFIP_NR_HDR = 0x00000080;
/** Don't send unknown commands (v3+). */
export const SMFIP_NOUNKNOWN = 0x00000100;
/** Don't send DATA (v4+). */
export const SMFIP_NODATA = 0x00000200;
/** The MTA understands SMFIR_SKIP. */
export const SMFIP_SKIP = 0x00000400;
/** The MTA also sends recipients it rejected itself. */
export const SMFIP_RCPT_REJ = 0x00000800;
/** No reply to CONNECT. */
export const SMFIP_NR_CONN = 0x00001000;
/** No reply to HELO. */
export const SMFIP_NR_HELO = 0x00002000;
/** No reply to MAIL. */
export const SMFIP_NR_MAIL = 0x00004000;
/** No reply to RCPT. */
export const SMFIP_NR_RCPT = 0x00008000;
/** No reply to DATA. */
export const SMFIP_NR_DATA = 0x00010000;
/** No reply to UNKNOWN. */
export const SMFIP_NR_UNKN = 0x00020000;
/** No reply to end of headers. */
export const SMFIP_NR_EOH = 0x00040000;
/** No reply to body chunks. */
export const SMFIP_NR_BODY = 0x00080000;
/** Header values keep their leading space. */
export const SMFIP_HDR_LEADSPC = 0x00100000;
/** Max data size 256 KiB (internal to sendmail/libmilter). */
export const SMFIP_MDS_256K = 0x10000000;
/** Max data size 1 MiB (internal to sendmail/libmilter). */
export const SMFIP_MDS_1M = 0x20000000;
/** Protocol steps of version 1 (`SMFI_V1_PROT`). */
export const SMFI_V1_PROT = 0x3f;
/** Protocol steps of version 2 (`SMFI_V2_PROT`). */
export const SMFI_V2_PROT = 0x7f;
/** Protocol steps of version 6 (`SMFI_CURR_PROT`). */
export const SMFI_CURR_PROT = 0x1fffff;

// Macro stages in the OPTNEG reply's symbol lists (`SMFIM_*`, mfapi.h:209-218).
/** Macros sent before CONNECT. */
export const SMFIM_CONNECT = 0;
/** Macros sent before HELO. */
export const SMFIM_HELO = 1;
/** Macros sent before MAIL. */
export const SMFIM_ENVFROM = 2;
/** Macros sent before RCPT. */
export const SMFIM_ENVRCPT = 3;
/** Macros sent before DATA. */
export const SMFIM_DATA = 4;
/** Macros sent before end of message. */
export const SMFIM_EOM = 5;
/** Macros sent before end of headers. */
export const SMFIM_EOH = 6;

// CONNECT address families (`SMFIA_*`, mfdef.h:41-45).
/** Unknown family: no port and no address follow (e.g. `sendmail -bs`). */
export const SMFIA_UNKNOWN = "U";
/** Unix-domain socket: port 0, address is the socket path. */
export const SMFIA_UNIX = "L";
/** IPv4: dotted quad. */
export const SMFIA_INET = "4";
/** IPv6: text form, with an "IPv6:" prefix from sendmail, without from Postfix. */
export const SMFIA_INET6 = "6";
