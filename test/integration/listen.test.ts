/**
 * A listening HTTP server (the /metrics endpoint) outlives a failed accept: once it listens, an
 * error it reports goes to the caller's handler instead of ending the process. A failed accept
 * (ENOBUFS, ENOMEM) cannot be caused on demand, so the test emits the error such a server emits.
 */
import assert from "node:assert/strict";
import { createServer, get } from "node:http";
import { describe, it } from "node:test";
import { boundAddress, listenHttp } from "../../services/shared/listen";

function fetchText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get(url, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString()));
      response.on("end", () => resolve(body));
    }).on("error", reject);
  });
}

describe("listenHttp", () => {
  it("rejects with the bind error; once listening, reports a failed accept and goes on serving", async () => {
    const reported: string[] = [];
    const server = createServer((_, response) => response.end("ok"));
    await listenHttp(server, "127.0.0.1:0", (error) => reported.push(error.message));
    try {
      server.emit("error", Object.assign(new Error("accept ENOBUFS"), { code: "ENOBUFS" }));
      assert.deepEqual(reported, ["accept ENOBUFS"]);
      assert.equal(await fetchText(`http://${boundAddress(server)}/`), "ok");
      const second = createServer();
      await assert.rejects(
        listenHttp(second, boundAddress(server), () => assert.fail("not listening: no accept to fail")),
        /EADDRINUSE/,
      );
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
