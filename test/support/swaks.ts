/**
 * The real swaks(1) SMTP client, for end-to-end tests against a private Postfix (postfix.ts).
 * Its transcript is parsed into one reply per SMTP command. Missing swaks fails the test.
 */
import { spawn } from "node:child_process";

/** One swaks run; only `port` and `to` are required. */
export interface SwaksOptions {
  /** Server port (PostfixInstance.smtpPort). */
  port: number;
  /** Server address; default 127.0.0.1, or ::1 with `ipv6`. */
  server?: string;
  /** Connect over IPv6 (swaks -6). */
  ipv6?: boolean;
  /** Envelope sender; "<>" is the null sender. Default sender@example.org. */
  from?: string;
  /** One or more envelope recipients, sent as one RCPT each in this order. */
  to: string | readonly string[];
  /** EHLO name; default client.example.net (swaks would use the machine's hostname). */
  ehlo?: string;
  /** XCLIENT ADDR: the client IP Postfix, the policy service and the milter see. IPv6 is written without "IPV6:". */
  xclientAddr?: string;
  /** XCLIENT NAME (client hostname; "[UNAVAILABLE]" is allowed). */
  xclientName?: string;
  /** XCLIENT LOGIN: the SASL username (policy sasl_username, milter {auth_authen}) without a SASL daemon. */
  xclientLogin?: string;
  /** Header lines added to the message, e.g. "X-Greylist: test". */
  headers?: readonly string[];
  /** Stop after this stage and QUIT (swaks --quit-after). */
  quitAfter?: "CONNECT" | "FIRST-HELO" | "XCLIENT" | "HELO" | "MAIL" | "RCPT";
  /** swaks --timeout for each reply; default 30 s, above Postfix's policy/milter timeouts in postfix.ts. */
  timeoutSeconds?: number;
  /** Kill swaks after this long whatever it is doing; default 90 s. */
  killAfterMs?: number;
}

/** A complete (possibly multi-line) SMTP reply. */
export interface SmtpReply {
  code: number;
  /** RFC 3463 code from the first line, e.g. "4.3.5", if the server sent one. */
  enhancedCode: string | undefined;
  /** Text after "NNN " / "NNN-" of every line, joined with "\n" (includes the enhanced code). */
  text: string;
  /** The reply lines as received, e.g. "451 4.3.5 <x@example.com>: Recipient address rejected: …". */
  lines: string[];
}

/** What swaks saw; commands it never sent have no reply. */
export interface SwaksResult {
  exitCode: number | null;
  banner: SmtpReply | undefined;
  /** Reply to the last EHLO/HELO (after XCLIENT, the second one). */
  ehlo: SmtpReply | undefined;
  xclient: SmtpReply | undefined;
  mail: SmtpReply | undefined;
  rcpt: { address: string; reply: SmtpReply }[];
  /** Reply to DATA (354 when the server wants the message). */
  data: SmtpReply | undefined;
  /** Reply after the final ".": 250 when the message was queued. */
  endOfData: SmtpReply | undefined;
  /** True when the message was queued (250 after the data). */
  accepted: boolean;
  /** From "250 2.0.0 Ok: queued as 6C28920C113". */
  queueId: string | undefined;
  /** swaks' own "***" lines (timeouts, lost connections). */
  errors: string[];
  /** Everything swaks printed, for assertion messages. */
  transcript: string;
}

/** Runs swaks once and parses its transcript; rejects only if swaks cannot run or must be killed. */
export function swaks(options: SwaksOptions): Promise<SwaksResult> {
  const killAfterMs = options.killAfterMs ?? 90_000;
  // SWAKS_OPT_* variables would add options behind the test's back.
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("SWAKS_")));
  const child = spawn("swaks", swaksArguments(options), { stdio: ["ignore", "pipe", "pipe"], env });
  let transcript = "";
  child.stdout.on("data", (chunk: Buffer) => (transcript += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (transcript += chunk.toString()));
  return new Promise((resolve, reject) => {
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill("SIGKILL");
    }, killAfterMs);
    child.once("error", (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const missing = error.code === "ENOENT" ? " (not installed: apt-get install swaks)" : "";
      reject(new Error(`swaks could not run${missing}: ${error.message}`));
    });
    child.once("close", (exitCode) => {
      clearTimeout(timer);
      if (killed) reject(new Error(`swaks killed after ${killAfterMs} ms:\n${transcript}`));
      else resolve({ exitCode, ...parseSwaksTranscript(transcript) });
    });
  });
}

function swaksArguments(options: SwaksOptions): string[] {
  const recipients = typeof options.to === "string" ? [options.to] : [...options.to];
  const args = [
    ...(options.ipv6 ? ["-6"] : []),
    "--server",
    options.server ?? (options.ipv6 ? "::1" : "127.0.0.1"),
    "--port",
    String(options.port),
    "--from",
    options.from ?? "sender@example.org",
    "--to",
    recipients.join(","),
    "--ehlo",
    options.ehlo ?? "client.example.net",
    "--timeout",
    `${options.timeoutSeconds ?? 30}s`,
    // stderr carries the "<**" and "***" lines; one ordered stream keeps replies next to commands.
    "--output-file-stderr",
    "&STDOUT",
  ];
  if (options.xclientAddr !== undefined) {
    // XCLIENT_README: IPv6 addresses are written "IPV6:2001:db8::1"; plain ones get a 501.
    const addr = options.xclientAddr.includes(":") && !/^ipv6:/i.test(options.xclientAddr) ? "IPV6:" : "";
    args.push("--xclient-addr", `${addr}${options.xclientAddr}`);
  }
  if (options.xclientName !== undefined) args.push("--xclient-name", options.xclientName);
  if (options.xclientLogin !== undefined) args.push("--xclient-login", options.xclientLogin);
  for (const header of options.headers ?? []) args.push("--add-header", header);
  if (options.quitAfter) args.push("--quit-after", options.quitAfter);
  return args;
}

type Parsed = Omit<SwaksResult, "exitCode">;

/**
 * Pairs each sent command (" -> ") with the reply that follows ("<- " expected, "<**" unexpected).
 * Message lines between the 354 and the lone "." are skipped.
 */
export function parseSwaksTranscript(transcript: string): Parsed {
  const parsed: Parsed = {
    banner: undefined,
    ehlo: undefined,
    xclient: undefined,
    mail: undefined,
    rcpt: [],
    data: undefined,
    endOfData: undefined,
    accepted: false,
    queueId: undefined,
    errors: [],
    transcript,
  };
  let command = "BANNER";
  let inMessage = false;
  let lines: string[] = [];
  for (const raw of transcript.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line.startsWith(" -> ")) {
      const sent = line.slice(4);
      if (inMessage) {
        if (sent === ".") [command, inMessage] = [".", false];
        continue;
      }
      command = sent;
      lines = [];
    } else if (line.startsWith("<-  ") || line.startsWith("<** ")) {
      const text = line.slice(4);
      lines.push(text);
      if (!/^\d{3}(?: |$)/.test(text)) continue; // "NNN-" lines continue the reply
      const reply = toReply(lines);
      lines = [];
      inMessage = record(parsed, command, reply);
    } else if (line.startsWith("*** ")) {
      parsed.errors.push(line.slice(4));
    }
  }
  return parsed;
}

/** Files `reply` under the command it answers; true when the message lines follow. */
function record(parsed: Parsed, command: string, reply: SmtpReply): boolean {
  const verb = command.split(/[ :]/, 1)[0]?.toUpperCase() ?? "";
  switch (verb) {
    case "BANNER":
      parsed.banner = reply;
      break;
    case "EHLO":
    case "HELO":
      parsed.ehlo = reply;
      break;
    case "XCLIENT":
      parsed.xclient = reply; // Postfix answers with a new 220 greeting, then swaks says EHLO again
      break;
    case "MAIL":
      parsed.mail = reply;
      break;
    case "RCPT":
      parsed.rcpt.push({ address: /<([^>]*)>/.exec(command)?.[1] ?? command, reply });
      break;
    case "DATA":
      parsed.data = reply;
      return reply.code === 354;
    case ".":
      parsed.endOfData = reply;
      parsed.accepted = reply.code === 250;
      parsed.queueId = /queued as ([0-9A-Za-z]+)/.exec(reply.text)?.[1];
      break;
  }
  return false;
}

function toReply(lines: string[]): SmtpReply {
  const first = lines[0] ?? "";
  const text = lines.map((line) => line.slice(4)).join("\n");
  return {
    code: Number.parseInt(first.slice(0, 3), 10),
    enhancedCode: /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})(?: |$)/.exec(first)?.[1],
    text,
    lines: [...lines],
  };
}
