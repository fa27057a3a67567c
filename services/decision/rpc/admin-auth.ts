/**
 * Who may call AdminService: a caller with the admin token (`authorization: Bearer <token>`), or
 * with a client certificate whose name is listed in --admin-client-names (mTLS). Shims hold
 * neither, so a shim's certificate reaches GreylistService but never AdminService. With no admin
 * credential configured at all, only loopback callers are let in (a single host, `npm start`).
 */
import { timingSafeEqual } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { type Metadata, status } from "@grpc/grpc-js";

/** The admin credentials the service accepts. */
export interface AdminAccess {
  /** The bearer token; "" = none. */
  readonly token: string;
  /** Client certificate names (subject CN or a DNS name) allowed to administer. */
  readonly clientNames: readonly string[];
}

/** What authorize() needs of a call. */
export interface CallIdentity {
  readonly metadata: Metadata;
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate };
}

/** A refusal, with the status the caller gets. */
export interface Refusal {
  readonly code: status;
  readonly details: string;
}

/** The names a certificate carries: its subject CN and its DNS subject alternative names. */
export function certificateNames(certificate: PeerCertificate | undefined): string[] {
  if (!certificate || Object.keys(certificate).length === 0) return [];
  const names: string[] = [];
  const cn = certificate.subject?.CN;
  if (typeof cn === "string") names.push(cn);
  for (const part of (certificate.subjectaltname ?? "").split(",")) {
    const name = /^\s*DNS:(.+)$/.exec(part)?.[1];
    if (name) names.push(name.trim());
  }
  return names;
}

function isLoopback(peer: string): boolean {
  return /^(127\.|\[::1\]|::1|::ffff:127\.|unix:)/.test(peer);
}

function tokenMatches(presented: string, expected: string): boolean {
  const a = Buffer.from(presented);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** undefined when the call may use AdminService, else why not. */
export function authorize(call: CallIdentity, access: AdminAccess): Refusal | undefined {
  const header = call.metadata.get("authorization")[0];
  const token = typeof header === "string" ? (/^Bearer (.+)$/.exec(header)?.[1] ?? "") : "";
  if (access.token !== "" && token !== "" && tokenMatches(token, access.token)) return undefined;
  const names = certificateNames(call.getAuthContext().sslPeerCertificate);
  if (names.some((name) => access.clientNames.includes(name))) return undefined;
  if (access.token === "" && access.clientNames.length === 0) {
    if (isLoopback(call.getPeer())) return undefined;
    return {
      code: status.PERMISSION_DENIED,
      details: "AdminService: no admin credential is configured, so only loopback callers may use it",
    };
  }
  if (token === "" && names.length === 0) {
    return {
      code: status.UNAUTHENTICATED,
      details: "AdminService needs an admin token or an admin client certificate",
    };
  }
  return { code: status.PERMISSION_DENIED, details: "this credential may not use AdminService" };
}
