/** A Postfix-like policy client for tests: one connection, one request at a time. */
import { connect, type Socket } from "node:net";

/** The attributes Postfix sends at RCPT, with test values; override any. */
export function policyRequest(attributes: Record<string, string> = {}): string {
  const all = {
    request: "smtpd_access_policy",
    protocol_state: "RCPT",
    protocol_name: "ESMTP",
    client_address: "192.0.2.10",
    client_name: "mail.example.org",
    reverse_client_name: "mail.example.org",
    helo_name: "mail.example.org",
    sender: "alice@example.org",
    recipient: "bob@example.com",
    recipient_count: "0",
    queue_id: "",
    instance: "1a2b.3c4d.5e6f.0",
    size: "0",
    sasl_method: "",
    sasl_username: "",
    sasl_sender: "",
    ...attributes,
  };
  return `${Object.entries(all)
    .map(([name, value]) => `${name}=${value}`)
    .join("\n")}\n\n`;
}

/** One policy connection. */
export class PolicyClient {
  private buffered = "";
  private waiting: ((reply: string) => void)[] = [];
  private closedWith: string | undefined;
  readonly closed: Promise<void>;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffered += chunk;
      for (let end = this.buffered.indexOf("\n\n"); end !== -1; end = this.buffered.indexOf("\n\n")) {
        const reply = this.buffered.slice(0, end);
        this.buffered = this.buffered.slice(end + 2);
        this.waiting.shift()?.(reply);
      }
    });
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.closedWith = "connection closed";
        for (const waiter of this.waiting.splice(0)) waiter("(closed)");
        resolve();
      });
    });
    socket.on("error", () => {});
  }

  /** Connects to HOST:PORT or unix:/path. */
  static open(address: string): Promise<PolicyClient> {
    const colon = address.lastIndexOf(":");
    return new Promise((resolve, reject) => {
      const ready = () => resolve(new PolicyClient(socket));
      const socket = address.startsWith("unix:")
        ? connect({ path: address.slice("unix:".length) }, ready)
        : connect(Number(address.slice(colon + 1)), address.slice(0, colon).replace(/^\[|\]$/g, ""), ready);
      socket.once("error", reject);
    });
  }

  /** Writes raw bytes (possibly a partial or several requests). */
  write(bytes: string | Buffer): void {
    this.socket.write(bytes);
  }

  /** The next reply ("action=..."), or "(closed)" if the server closed the connection. */
  next(): Promise<string> {
    if (this.closedWith) return Promise.resolve("(closed)");
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Sends one request and returns its reply. */
  async ask(attributes: Record<string, string> = {}): Promise<string> {
    const reply = this.next();
    this.write(policyRequest(attributes));
    return reply;
  }

  close(): void {
    this.socket.end();
  }
}
