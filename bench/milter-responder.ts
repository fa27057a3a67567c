/**
 * The milter benchmark's ceiling: a bare, stateless milter that answers by recipient name
 * (a recipient containing "grey" gets 451, every other one CONTINUE) and decides nothing. It
 * negotiates the same steps as the greyfleet shim, uses the same codec, and writes each batch of
 * replies in one write with TCP_NODELAY, so the difference to the shim is the decision alone.
 * Usage: node dist/bench/milter-responder.js HOST:PORT   (prints "listening HOST:PORT")
 */
import { createServer } from "node:net";
import { MilterDecoder } from "../services/milter/codec";
import { encodeContinue, encodeReplyCode } from "../services/milter/encode";
import { negotiate } from "../services/milter/negotiate";

const CONTINUE = encodeContinue();
const GREY = encodeReplyCode(451, "4.7.1", "Greylisted, please try again later");

const server = createServer({ noDelay: true }, (socket) => {
  const decoder = new MilterDecoder();
  let replyToConnect = true;
  let replyToHelo = true;
  socket.on("error", () => socket.destroy());
  socket.on("data", (chunk: Buffer) => {
    const { commands, error } = decoder.push(chunk);
    const out: Buffer[] = [];
    for (const command of commands) {
      switch (command.kind) {
        case "optneg": {
          const answer = negotiate(command);
          if (!answer.ok) {
            socket.destroy();
            return;
          }
          replyToConnect = !answer.value.noReply.connect;
          replyToHelo = !answer.value.noReply.helo;
          out.push(answer.value.reply);
          break;
        }
        case "connect":
          if (replyToConnect) out.push(CONTINUE);
          break;
        case "helo":
          if (replyToHelo) out.push(CONTINUE);
          break;
        case "rcpt":
          out.push(command.address.includes("grey") && GREY.ok ? GREY.value : CONTINUE);
          break;
        case "mail":
        case "data":
        case "header":
        case "eoh":
        case "body":
        case "bodyeob":
        case "unknown":
          out.push(CONTINUE);
          break;
        case "quit":
          socket.end();
          break;
        default:
          break; // macros, abort: no reply
      }
    }
    if (out.length > 0) socket.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
    if (error) socket.destroy();
  });
});

const [host, port] = (process.argv[2] ?? "127.0.0.1:0").split(/:(?=\d+$)/);
server.listen(Number(port), host, () => {
  const address = server.address();
  process.stdout.write(
    `listening ${typeof address === "object" && address ? `${address.address}:${address.port}` : ""}\n`,
  );
});
for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => process.exit(0));
