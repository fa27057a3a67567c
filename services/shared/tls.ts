/**
 * TLS for the gRPC hop between shims and the decision service: server and channel credentials
 * from PEM files, re-read every `reloadMs` so a renewed certificate is used without a restart
 * (grpc-js's file-watcher certificate providers). Insecure when no file is configured.
 */
import { readFileSync } from "node:fs";
import { type ChannelCredentials, credentials, experimental, ServerCredentials } from "@grpc/grpc-js";
import { SettingError } from "./errors";

/** The decision service's TLS files; all empty = plaintext (loopback only, by default). */
export interface ServerTlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** CA of the clients' certificates: when set, every client must present one (mTLS). */
  readonly clientCaFile: string;
}

/** A client's TLS files; `caFile` empty = plaintext. */
export interface ClientTlsFiles {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** Name to verify in the server's certificate, when it differs from the address's host (channelOptions). */
  readonly serverName: string;
}

function check(flag: string, path: string): string {
  try {
    readFileSync(path);
    return path;
  } catch (error) {
    throw new Error(`--${flag} ${path}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Server credentials for the decision service; throws naming the setting whose file is unreadable. */
export function serverCredentials(files: ServerTlsFiles, reloadMs: number): ServerCredentials {
  if (files.certFile === "" && files.keyFile === "" && files.clientCaFile === "")
    return ServerCredentials.createInsecure();
  if (files.certFile === "" || files.keyFile === "") {
    throw new SettingError("--tls-cert-file and --tls-key-file go together (and --tls-client-ca-file needs them)");
  }
  const identity = new experimental.FileWatcherCertificateProvider({
    certificateFile: check("tls-cert-file", files.certFile),
    privateKeyFile: check("tls-key-file", files.keyFile),
    refreshIntervalMs: reloadMs,
  });
  // Server-side TLS only: no client certificates asked for (the files are still re-read).
  if (files.clientCaFile === "") return experimental.createCertificateProviderServerCredentials(identity, null, false);
  const clientCa = new experimental.FileWatcherCertificateProvider({
    caCertificateFile: check("tls-client-ca-file", files.clientCaFile),
    refreshIntervalMs: reloadMs,
  });
  // grpc-js 1.14.7's createCertificateProviderServerCredentials(ca, identity, …) passes its two
  // providers to the credentials' constructor(identity, ca, …) in swapped order, so they are
  // given here swapped too (test/integration/mtls.test.ts fails if a grpc-js upgrade fixes it).
  return experimental.createCertificateProviderServerCredentials(identity, clientCa, true);
}

/** Channel credentials for a client of the decision service. */
export function channelCredentials(files: ClientTlsFiles, reloadMs: number, flagPrefix: string): ChannelCredentials {
  if (files.caFile === "") {
    if (files.certFile !== "" || files.keyFile !== "")
      throw new SettingError(`--${flagPrefix}tls-cert-file needs --${flagPrefix}tls-ca-file`);
    return credentials.createInsecure();
  }
  const ca = new experimental.FileWatcherCertificateProvider({
    caCertificateFile: check(`${flagPrefix}tls-ca-file`, files.caFile),
    refreshIntervalMs: reloadMs,
  });
  let identity: experimental.CertificateProvider | null = null;
  if (files.certFile !== "" || files.keyFile !== "") {
    if (files.certFile === "" || files.keyFile === "") {
      throw new SettingError(`--${flagPrefix}tls-cert-file and --${flagPrefix}tls-key-file go together`);
    }
    identity = new experimental.FileWatcherCertificateProvider({
      certificateFile: check(`${flagPrefix}tls-cert-file`, files.certFile),
      privateKeyFile: check(`${flagPrefix}tls-key-file`, files.keyFile),
      refreshIntervalMs: reloadMs,
    });
  }
  return experimental.createCertificateProviderChannelCredentials(ca, identity);
}

/** Channel options for `files`: the name verified in the server's certificate, if overridden. */
export function channelOptions(files: ClientTlsFiles): Record<string, string> {
  return files.serverName === "" ? {} : { "grpc.ssl_target_name_override": files.serverName };
}
