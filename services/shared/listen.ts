/** Helpers for listen addresses written as HOST:PORT. */
import type { Server } from "node:net";
import { HOST_PORT } from "./settings";

/** Splits "HOST:PORT" / "[V6]:PORT" into host and port. */
export function splitHostPort(hostPort: string): { host: string; port: number } {
  const match = HOST_PORT.exec(hostPort);
  if (!match?.[1] || !match[2]) throw new Error(`"${hostPort}" is not HOST:PORT`);
  const host = match[1].startsWith("[") ? match[1].slice(1, -1) : match[1];
  return { host, port: Number(match[2]) };
}

/**
 * Starts `server` listening on HOST:PORT; rejects with the bind error (e.g. EADDRINUSE). Errors it
 * reports once listening are failed accepts (ENOBUFS, ENOMEM, …): it goes on accepting, so they go
 * to `onError` (Node would otherwise throw them and end the process).
 */
export function listenHttp(server: Server, hostPort: string, onError: (error: Error) => void): Promise<void> {
  const { host, port } = splitHostPort(hostPort);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      server.on("error", onError);
      resolve();
    });
  });
}

/** The "HOST:PORT" a listening server is bound to (the real port when asked for port 0). */
export function boundAddress(server: Server): string {
  const address = server.address();
  if (address === null || typeof address === "string") return String(address);
  return address.family === "IPv6" ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}
