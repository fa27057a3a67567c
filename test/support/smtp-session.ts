/**
 * A minimal SMTP client for what swaks cannot do: several messages in one SMTP session. It
 * sends one command at a time and returns each complete reply.
 */
import { connect, type Socket } from "node:net";

/** One SMTP session over a socket. */
export class SmtpSession {
  private buffered = "";
  private waiter: ((reply: string) => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.buffered += chunk;
      for (let end = this.buffered.indexOf("\r\n"); end !== -1; end = this.buffered.indexOf("\r\n")) {
        const line = this.buffered.slice(0, end);
        this.buffered = this.buffered.slice(end + 2);
        // A multi-line reply ends with its "NNN " line, which carries the code that counts.
        if (/^\d{3} /.test(line)) this.waiter?.(line);
      }
    });
    socket.on("error", () => {});
  }

  /** Connects and returns the session with the greeting already read. */
  static async open(port: number, host = "127.0.0.1"): Promise<{ session: SmtpSession; greeting: string }> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(port, host, () => resolve(s));
      s.once("error", reject);
    });
    const session = new SmtpSession(socket);
    const greeting = await session.next();
    return { session, greeting };
  }

  private next(): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no SMTP reply within 30 s")), 30_000);
      this.waiter = (reply) => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve(reply);
      };
    });
  }

  /** Sends one command line and returns its (last-line) reply, e.g. "250 2.1.0 Ok". */
  async command(line: string): Promise<string> {
    const reply = this.next();
    this.socket.write(`${line}\r\n`);
    return reply;
  }

  /** Sends a message body after a 354 and returns the final reply. */
  async body(lines: readonly string[]): Promise<string> {
    const reply = this.next();
    this.socket.write(`${lines.map((l) => (l.startsWith(".") ? `.${l}` : l)).join("\r\n")}\r\n.\r\n`);
    return reply;
  }

  close(): void {
    this.socket.end();
  }
}
