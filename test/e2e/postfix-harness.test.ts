/**
 * The end-to-end harness itself: a private Postfix driven by real swaks, before any shim is
 * involved. The tests run concurrently, each with its own instance, to show nothing is shared.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, createServer, type Server } from "node:net";
import { describe, it } from "node:test";
import { freePort } from "../support/ports";
import { PostfixInstance, type PostfixOptions } from "../support/postfix";
import { type SwaksResult, swaks } from "../support/swaks";

/** Runs `body` against a fresh instance and always stops it. */
async function withPostfix(options: PostfixOptions, body: (postfix: PostfixInstance) => Promise<void>): Promise<void> {
  const postfix = await PostfixInstance.start(options);
  try {
    await body(postfix);
  } finally {
    await postfix.stop();
  }
}

function explain(result: SwaksResult, postfix: PostfixInstance): string {
  return `--- swaks ---\n${result.transcript}\n--- maillog ---\n${postfix.maillog()}`;
}

/** A minimal policy service that records each request and answers every RCPT with a PREPEND. */
async function recordingPolicy(): Promise<{ server: Server; address: string; requests: Map<string, string>[] }> {
  const requests: Map<string, string>[] = [];
  const server = createServer((socket) => {
    let buffered = "";
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      for (let end = buffered.indexOf("\n\n"); end >= 0; end = buffered.indexOf("\n\n")) {
        const lines = buffered.slice(0, end).split("\n");
        buffered = buffered.slice(end + 2);
        const request = new Map(
          lines.map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
        );
        requests.push(request);
        socket.write("action=PREPEND X-Greylist: delayed 0 seconds by harness policy\n\n");
      }
    });
    socket.on("error", () => {}); // Postfix may drop idle policy connections at stop
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, address: `inet:127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

describe("private Postfix harness", { concurrency: true }, () => {
  it("accepts a message for a relay domain, discards it, and logs its headers", async () => {
    await withPostfix({}, async (postfix) => {
      const result = await swaks({ port: postfix.smtpPort, to: "rcpt@example.com", headers: ["X-Greylist: test"] });
      const why = explain(result, postfix);
      assert.equal(result.banner?.code, 220, why);
      assert.equal(result.mail?.code, 250, why);
      assert.deepEqual(
        result.rcpt.map((rcpt) => [rcpt.address, rcpt.reply.code]),
        [["rcpt@example.com", 250]],
        why,
      );
      assert.equal(result.data?.code, 354, why);
      assert.ok(result.accepted, why);
      assert.match(result.queueId ?? "", /^[0-9A-F]+$/, why);
      const queueId = result.queueId ?? "";
      assert.deepEqual(await postfix.deliveredRecipients(queueId), ["rcpt@example.com"], why);
      const headers = await postfix.deliveredHeaders(queueId);
      assert.ok(headers.includes("X-Greylist: test"), `${headers.join("\n")}\n${why}`);
      assert.ok(headers.some((header) => header.startsWith("Received: from client.example.net (unknown [127.0.0.1])")));
      assert.match(postfix.maillog(), new RegExp(`${queueId}: to=<rcpt@example.com>, relay=none, .*status=sent`));
    });
  });

  it("refuses to relay to other domains", async () => {
    await withPostfix({}, async (postfix) => {
      const result = await swaks({ port: postfix.smtpPort, to: "someone@example.net", quitAfter: "RCPT" });
      assert.equal(result.rcpt[0]?.reply.lines[0], "554 5.7.1 <someone@example.net>: Relay access denied");
      assert.equal(result.accepted, false);
    });
  });

  it("answers 451 4.3.5 when the policy service is unreachable", async () => {
    const closedPort = await freePort(); // nothing listens there
    await withPostfix({ policyService: `inet:127.0.0.1:${closedPort}` }, async (postfix) => {
      const to = ["first@example.com", "second@example.com"];
      const result = await swaks({ port: postfix.smtpPort, to });
      const why = explain(result, postfix);
      assert.equal(result.mail?.code, 250, why);
      for (const [index, rcpt] of result.rcpt.entries()) {
        assert.equal(rcpt.reply.code, 451, why);
        assert.equal(rcpt.reply.enhancedCode, "4.3.5", why);
        assert.equal(
          rcpt.reply.lines[0],
          `451 4.3.5 <${to[index]}>: Recipient address rejected: Server configuration problem`,
          why,
        );
      }
      assert.equal(result.rcpt.length, 2, why);
      assert.equal(result.accepted, false, why);
      assert.equal(result.data, undefined, "swaks does not send DATA when no recipient was accepted");
      // try_limit 2: connect, retry after retry_delay 1 s, then the default action.
      await postfix.waitForLog(
        new RegExp(`warning: problem talking to server 127\\.0\\.0\\.1:${closedPort}: Connection refused`),
      );
    });
  });

  it("passes XCLIENT ADDR and LOGIN to the policy service over IPv4 and IPv6, and logs its PREPEND", async () => {
    const policy = await recordingPolicy();
    try {
      await withPostfix({ policyService: policy.address, ipv6: true }, async (postfix) => {
        const v4 = await swaks({
          port: postfix.smtpPort,
          to: "alice-rcpt@example.com",
          xclientAddr: "192.0.2.1",
          xclientName: "client.example.net",
          xclientLogin: "alice",
        });
        assert.equal(v4.xclient?.code, 220, explain(v4, postfix));
        assert.ok(v4.accepted, explain(v4, postfix));
        const v6 = await swaks({
          port: postfix.smtpPort,
          ipv6: true,
          to: "v6-rcpt@example.com",
          xclientAddr: "2001:db8::1",
        });
        assert.ok(v6.accepted, explain(v6, postfix));

        const seen = policy.requests.map((request) => ({
          recipient: request.get("recipient"),
          client_address: request.get("client_address"),
          server_address: request.get("server_address"),
          sasl_method: request.get("sasl_method"),
          sasl_username: request.get("sasl_username"),
        }));
        assert.deepEqual(seen, [
          {
            recipient: "alice-rcpt@example.com",
            client_address: "192.0.2.1",
            server_address: "127.0.0.1",
            sasl_method: "XCLIENT",
            sasl_username: "alice",
          },
          {
            recipient: "v6-rcpt@example.com",
            client_address: "2001:db8::1",
            server_address: "::1",
            sasl_method: "",
            sasl_username: "",
          },
        ]);
        const headers = await postfix.deliveredHeaders(v4.queueId ?? "");
        assert.equal(headers[0], "X-Greylist: delayed 0 seconds by harness policy", headers.join("\n"));
        const received = `Received: from client.example.net (client.example.net [192.0.2.1]) by mx.test (Postfix) with ESMTPA id ${v4.queueId} for <alice-rcpt@example.com>;`;
        assert.ok(headers[1]?.startsWith(received), headers.join("\n"));
        await postfix.waitForLog(
          new RegExp(
            `${v4.queueId}: client=client\\.example\\.net\\[192\\.0\\.2\\.1\\], sasl_method=XCLIENT, sasl_username=alice`,
          ),
        );
      });
    } finally {
      policy.server.close();
    }
  });
});
