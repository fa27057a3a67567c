/**
 * A minimal HTTP/2 client for unary gRPC calls, for the load generator only. Node's http2 client
 * costs ~100 us of CPU per call, as much as the server under test, so on a 2-core machine it
 * would be the bottleneck; h2load (C) is cheap but posts one fixed body, and the benchmark needs
 * a different triplet in every call. This client writes pre-encoded frames straight to a socket:
 * a constant HPACK header block (static-table and literal fields, no dynamic table), one DATA
 * frame per call, and reads back only what it needs: DATA (the response message) and the
 * END_STREAM flag. Responses' header blocks are not decoded: a call succeeded when its stream
 * ended after a response message (a gRPC error is a trailers-only response, without DATA).
 */
import { connect, type Socket } from "node:net";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");
const FRAME_DATA = 0x0;
const FRAME_HEADERS = 0x1;
const FRAME_RST_STREAM = 0x3;
const FRAME_SETTINGS = 0x4;
const FRAME_PING = 0x6;
const FRAME_GOAWAY = 0x7;
const FRAME_WINDOW_UPDATE = 0x8;
const FLAG_END_STREAM = 0x1;
const FLAG_ACK = 0x1;
const FLAG_END_HEADERS = 0x4;
const FLAG_PADDED = 0x8;
const MAX_WINDOW = 2 ** 31 - 1;

function frameHeader(length: number, type: number, flags: number, stream: number): Buffer {
  const header = Buffer.allocUnsafe(9);
  header.writeUIntBE(length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(stream, 5);
  return header;
}

function literal(nameIndex: number, value: string): Buffer {
  // Literal header field without indexing, indexed name (RFC 7541 6.2.2), 4-bit prefix.
  const name = nameIndex < 15 ? [nameIndex] : [15, nameIndex - 15];
  return Buffer.concat([Buffer.from(name), Buffer.from([value.length]), Buffer.from(value, "latin1")]);
}

function headerBlock(authority: string, path: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http (static table 3 and 6)
    literal(4, path), // :path
    literal(1, authority), // :authority
    literal(31, "application/grpc"), // content-type
    Buffer.from([0x00, 2]),
    Buffer.from("te", "latin1"),
    Buffer.from([8]),
    Buffer.from("trailers", "latin1"),
  ]);
}

/** The outcome of one call: the response message (without the 5-byte prefix), or an error. */
export type CallResult = { ok: true; message: Buffer } | { ok: false; error: string };

interface Pending {
  readonly done: (result: CallResult) => void;
  message?: Buffer;
}

/**
 * One HTTP/2 connection carrying unary gRPC calls to one method. Requests are small, so the
 * server's initial 64 KiB connection window is never exhausted by the few dozen calls a
 * benchmark keeps in flight: outgoing flow control is not tracked.
 */
export class H2GrpcClient {
  private readonly socket: Socket;
  private readonly headers: Buffer;
  private readonly pending = new Map<number, Pending>();
  private nextStream = 1;
  private buffered: Buffer = Buffer.alloc(0);
  private closedError: string | undefined;

  private constructor(socket: Socket, authority: string, path: string) {
    this.socket = socket;
    this.headers = headerBlock(authority, path);
    socket.setNoDelay(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (error) => this.fail(error.message));
    socket.on("close", () => this.fail("connection closed"));
    // Our settings: no push, the largest stream window; then the largest connection window.
    const settings = Buffer.alloc(12);
    settings.writeUInt16BE(0x2, 0); // ENABLE_PUSH
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(0x4, 6); // INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(MAX_WINDOW, 8);
    const increment = Buffer.allocUnsafe(4);
    increment.writeUInt32BE(MAX_WINDOW - 65_535, 0);
    socket.write(
      Buffer.concat([
        PREFACE,
        frameHeader(12, FRAME_SETTINGS, 0, 0),
        settings,
        frameHeader(4, FRAME_WINDOW_UPDATE, 0, 0),
        increment,
      ]),
    );
  }

  /** Connects to host:port for calls to `path` (e.g. "/greyfleet.v1.GreylistService/Check"). */
  static open(target: string, path: string): Promise<H2GrpcClient> {
    const colon = target.lastIndexOf(":");
    const host = target.slice(0, colon);
    const port = Number(target.slice(colon + 1));
    return new Promise((resolve, reject) => {
      const socket = connect(port, host, () => {
        socket.off("error", reject);
        resolve(new H2GrpcClient(socket, target, path));
      });
      socket.once("error", reject);
    });
  }

  /** Sends one request message (already protobuf-encoded) and resolves with the response. */
  call(message: Uint8Array): Promise<CallResult> {
    if (this.closedError) return Promise.resolve({ ok: false, error: this.closedError });
    const stream = this.nextStream;
    this.nextStream += 2;
    const out = Buffer.allocUnsafe(9 + this.headers.length + 9 + 5 + message.length);
    let at = frameHeader(this.headers.length, FRAME_HEADERS, FLAG_END_HEADERS, stream).copy(out, 0);
    at += this.headers.copy(out, at);
    at += frameHeader(5 + message.length, FRAME_DATA, FLAG_END_STREAM, stream).copy(out, at);
    out[at] = 0;
    out.writeUInt32BE(message.length, at + 1);
    out.set(message, at + 5);
    return new Promise((resolve) => {
      this.pending.set(stream, { done: resolve });
      this.socket.write(out);
    });
  }

  close(): void {
    this.socket.end();
  }

  private fail(error: string): void {
    this.closedError ??= error;
    for (const [, call] of this.pending) call.done({ ok: false, error });
    this.pending.clear();
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    let at = 0;
    while (this.buffered.length - at >= 9) {
      const length = this.buffered.readUIntBE(at, 3);
      if (this.buffered.length - at < 9 + length) break;
      const type = this.buffered[at + 3] ?? 0;
      const flags = this.buffered[at + 4] ?? 0;
      const stream = this.buffered.readUInt32BE(at + 5) & 0x7fffffff;
      this.onFrame(type, flags, stream, this.buffered.subarray(at + 9, at + 9 + length));
      at += 9 + length;
    }
    this.buffered = this.buffered.subarray(at);
  }

  private onFrame(type: number, flags: number, stream: number, payload: Buffer): void {
    const call = this.pending.get(stream);
    switch (type) {
      case FRAME_DATA: {
        const body = flags & FLAG_PADDED ? payload.subarray(1, payload.length - (payload[0] ?? 0)) : payload;
        if (call && body.length >= 5) call.message = Buffer.from(body.subarray(5));
        break;
      }
      case FRAME_RST_STREAM:
        if (call) {
          this.pending.delete(stream);
          call.done({ ok: false, error: "stream reset" });
        }
        return;
      case FRAME_SETTINGS:
        if (!(flags & FLAG_ACK)) this.socket.write(frameHeader(0, FRAME_SETTINGS, FLAG_ACK, 0));
        return;
      case FRAME_PING:
        if (!(flags & FLAG_ACK)) this.socket.write(Buffer.concat([frameHeader(8, FRAME_PING, FLAG_ACK, 0), payload]));
        return;
      case FRAME_GOAWAY:
        this.fail("server sent GOAWAY");
        return;
      default:
        break; // HEADERS, WINDOW_UPDATE, ...: only END_STREAM matters
    }
    if (call && flags & FLAG_END_STREAM) {
      this.pending.delete(stream);
      call.done(call.message ? { ok: true, message: call.message } : { ok: false, error: "no response message" });
    }
  }
}
