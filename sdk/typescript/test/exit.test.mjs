// The end of the process: queued and open sessions are flushed when it would exit and on
// SIGTERM, an idle client never keeps it alive, and a hanging API delays it by
// shutdownTimeout at most. Each case runs in a child process, as an application would.
import assert from "node:assert/strict";
import { test } from "node:test";

import { apiKey, endpoint, readSession, runNode, silentServer, storedIds, uniqueAgent, waitFor } from "./helpers.mjs";

const RECORD = `
  import { BagulaClient } from "@bagula/client";
  const [agent, count] = process.argv.slice(2);
  const client = new BagulaClient({ batchSize: 1000, flushInterval: 3_600_000 }); // would never send by itself
  const tracker = client.getSessionTracker();
  const ids = [];
  for (let n = 0; n < Number(count); n++) {
    const sessionId = tracker.startSession(agent, "request " + n);
    tracker.completeSession(sessionId, { status: "success" });
    ids.push(sessionId);
  }
`;

test("queued sessions, and sessions still open, are flushed when the process ends", async () => {
  const agent = uniqueAgent("ts-exit");
  const run = runNode(
    RECORD + `ids.push(tracker.startSession(agent, "still open at exit")); console.log(ids.join(","));`,
    { env: { BAGULA_API_KEY: apiKey(), BAGULA_ENDPOINT: endpoint() }, args: [agent, "25"] },
  );
  const result = await run.exited;
  assert.equal(result.code, 0, result.stderr);
  const sent = result.stdout.trim().split(",");
  assert.equal(sent.length, 26);
  assert.deepEqual(await storedIds(agent), [...sent].sort());
  assert.equal((await readSession(sent[25])).finalOutcome.status, "abandoned");
});

test("an idle client keeps no process alive: timers and sockets are unref'd", async () => {
  const agent = uniqueAgent("ts-idle");
  const started = performance.now();
  const run = runNode(
    `
    import { BagulaClient } from "@bagula/client";
    const client = new BagulaClient({ batchSize: 1, flushInterval: 3_600_000, sessionTimeout: 3_600_000 });
    const tracker = client.getSessionTracker();
    tracker.completeSession(tracker.startSession(process.argv[2], "one"), { status: "success" });
    console.log(await client.flush(10_000)); // delivered; then nothing is left to do
    `,
    { env: { BAGULA_API_KEY: apiKey(), BAGULA_ENDPOINT: endpoint() }, args: [agent], timeout: 10_000 },
  );
  const result = await run.exited;
  assert.equal(result.timedOut, false, "the process was still alive after 10 s");
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), "true");
  // A flush interval, a session sweep and a kept-alive connection are all pending: none holds it.
  assert.ok(performance.now() - started < 3000, `the process took ${performance.now() - started} ms to end`);
  assert.equal((await storedIds(agent)).length, 1);
});

test("queued and open sessions are flushed on SIGTERM, and the process still ends by the signal", async () => {
  const agent = uniqueAgent("ts-sigterm");
  const run = runNode(RECORD + `ids.push(tracker.startSession(agent, "open at SIGTERM")); console.log(ids.join(","));
    setInterval(() => {}, 1000); // a server, say`, {
    env: { BAGULA_API_KEY: apiKey(), BAGULA_ENDPOINT: endpoint() },
    args: [agent, "20"],
  });
  await waitFor(() => run.output().includes("\n")); // the sessions are queued, none sent
  const sent = run.output().trim().split(",");
  run.child.kill("SIGTERM");
  const result = await run.exited;
  assert.equal(result.signal, "SIGTERM", result.stderr);
  assert.deepEqual(await storedIds(agent), [...sent].sort());
  assert.equal((await readSession(sent.at(-1))).finalOutcome.status, "abandoned");
});

test("an application that handles SIGTERM itself keeps control; its normal exit flushes", async () => {
  const agent = uniqueAgent("ts-own-sigterm");
  const run = runNode(
    RECORD +
      `const timer = setInterval(() => {}, 1000);
       process.on("SIGTERM", () => { console.log("closing"); clearInterval(timer); }); // graceful: let the loop drain
       console.log(ids.join(","));`,
    { env: { BAGULA_API_KEY: apiKey(), BAGULA_ENDPOINT: endpoint() }, args: [agent, "20"] },
  );
  await waitFor(() => run.output().includes("\n"));
  const sent = run.output().trim().split("\n")[0].split(",");
  run.child.kill("SIGTERM");
  const result = await run.exited;
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /closing/);
  assert.deepEqual(await storedIds(agent), [...sent].sort());
});

test("the process waits no longer than shutdownTimeout when the API hangs", async () => {
  const silent = await silentServer();
  try {
    const started = performance.now();
    const run = runNode(
      `
      import { BagulaClient } from "@bagula/client";
      const client = new BagulaClient({ apiKey: "bgl_x", batchSize: 5, flushInterval: 100, requestTimeout: 60_000, shutdownTimeout: 1000 });
      const tracker = client.getSessionTracker();
      for (let n = 0; n < 20; n++) tracker.completeSession(tracker.startSession("a", "r"), { status: "success" });
      `,
      { env: { BAGULA_ENDPOINT: silent.url } },
    );
    const result = await run.exited;
    const elapsed = performance.now() - started;
    assert.equal(result.code, 0, result.stderr);
    assert.ok(elapsed < 4000, `the process took ${elapsed} ms to end`);
    assert.match(result.stderr, /20 sessions not delivered/);
  } finally {
    await silent.close();
  }
});
