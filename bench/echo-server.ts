/**
 * The benchmark's ceiling: a bare grpc-js server with the GreylistService contract that answers
 * every Check with a fixed response of a realistic size, doing no work at all.
 * Usage: node dist/bench/echo-server.js HOST:PORT   (prints "listening HOST:PORT")
 */
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { Action, CheckResponse, GreylistServiceService, Reason } from "../services/contract/gen/greyfleet/v1/greylist";

const RESPONSE = CheckResponse.fromPartial({
  action: Action.ACTION_DEFER,
  reason: Reason.REASON_NEW_TRIPLET,
  retryAfterSeconds: 300,
  smtpCode: 451,
  enhancedStatusCode: "4.7.1",
  smtpText: "Greylisted, please try again later",
});

const server = new Server(process.env.CHANNELZ === "0" ? { "grpc.enable_channelz": 0 } : {});
server.addService(GreylistServiceService, {
  check: (_call: unknown, callback: (error: null, response: CheckResponse) => void) => callback(null, RESPONSE),
});
server.bindAsync(process.argv[2] ?? "127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.stdout.write(`listening 127.0.0.1:${port}\n`);
});
for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, () => process.exit(0));
