/**
 * The TCP or unix-socket listener both shims use: per-connection idle timeout, TCP_NODELAY, a
 * count of open connections, and a graceful stop that lets each connection finish what it is
 * doing (the connection handler says when it is idle) before closing it.
 */
import { chmodSync, existsSync, unlinkSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { boundAddress, splitHostPort } from "./listen";
import type { ShimMetrics } from "./shim-metrics";

/** Mode of a shim's unix socket: read and write for its owner and group. */
const UNIX_SOCKET_MODE = 0o660;

/** What a shim does with one accepted connection. */
/**
 * Writes replies to an MTA connection; while the MTA is not reading them (more than the socket's
 * high-water mark is buffered) its requests are not read either, so a peer that only sends
 * cannot grow the shim's memory.
 */
export function writeReply(socket: Socket, bytes: Buffer): void {
  if (socket.destroyed) return;
  if (!socket.write(bytes) && !socket.isPaused()) {
    socket.pause();
    socket.once("drain", () => socket.resume());
  }
}

export interface ConnectionHandler {
  /** Resolves when the connection has no request in progress (for a graceful stop). */
  idle(): Promise<void>;
}

/** A listening shim. */
export interface ShimListener {
  /** "host:port" or "unix:/path". */
  readonly address: string;
  /** Stops accepting; waits up to `graceMs` for connections to go idle; closes them all. */
  stop(graceMs: number): Promise<void>;
}

/** Listens on HOST:PORT or unix:/path and hands every connection to `handle`. */
export async function listenShim(options: {
  listen: string;
  idleTimeoutMs: number;
  metrics: ShimMetrics;
  handle: (socket: Socket) => ConnectionHandler;
  /** Told of a failed accept (ENOBUFS, ENOMEM, …) once listening; the server goes on accepting. */
  onError: (error: Error) => void;
}): Promise<ShimListener> {
  const connections = new Map<Socket, ConnectionHandler>();
  // allowHalfOpen: a peer that shuts down its side after sending (Exim's readsocket does, with
  // its "shutdown" option) still gets its answers; each handler ends the connection once it has
  // answered everything it was asked.
  const server: Server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
    options.metrics.connectionOpened();
    socket.setTimeout(options.idleTimeoutMs, () => socket.destroy());
    socket.once("close", () => {
      connections.delete(socket);
      options.metrics.connectionClosed();
    });
    connections.set(socket, options.handle(socket));
  });
  const unixPath = options.listen.startsWith("unix:") ? options.listen.slice("unix:".length) : undefined;
  // A socket file left by a crashed run would make listen() fail with EADDRINUSE: it is removed,
  // unless a process still answers on it (a second instance must not take the MTA's socket).
  if (unixPath && existsSync(unixPath) && (await answers(unixPath))) {
    throw new Error(`listen ${options.listen}: another process is listening on it`);
  }
  await new Promise<void>((resolve, reject) => {
    const failed = (error: Error) => reject(new Error(`listen ${options.listen}: ${error.message}`));
    const listening = () => {
      // From now on an error is a failed accept, not a failed start: reported, never thrown
      // (Node would throw an 'error' nobody listens to, and end every MTA session with it).
      server.off("error", failed);
      server.on("error", options.onError);
      resolve();
    };
    server.once("error", failed);
    if (unixPath) {
      if (existsSync(unixPath)) unlinkSync(unixPath);
      server.listen(unixPath, () => {
        // Owner and group may connect (the MTA's group, e.g. postfix, through a setgid
        // directory), nobody else, whatever the process's umask.
        chmodSync(unixPath, UNIX_SOCKET_MODE);
        listening();
      });
    } else {
      const { host, port } = splitHostPort(options.listen);
      server.listen(port, host, listening);
    }
  });
  return {
    address: unixPath ? options.listen : boundAddress(server),
    async stop(graceMs: number): Promise<void> {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const settled = Promise.all([...connections.values()].map((connection) => connection.idle()));
      await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, graceMs).unref())]);
      for (const socket of connections.keys()) socket.destroy();
      await closed;
    },
  };
}

/** Whether a process accepts connections on the unix socket `path`. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect({ path });
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}
