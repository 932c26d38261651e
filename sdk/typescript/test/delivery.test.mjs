// The TypeScript client against the real ingest API: nothing lost, nothing twice, never in the
// agent's way. Tests wait for events (a request seen by the proxy, a retry counted, a row stored),
// never for a guessed amount of time.
import assert from "node:assert/strict";
import { test } from "node:test";

import { BagulaClient, redactors } from "@bagula/client";

import {
  apiKey,
  endpoint,
  fast,
  faultyProxy,
  ownApi,
  readSession,
  recordSession,
  recordingLogger,
  silentServer,
  storedIds,
  storedSessions,
  uniqueAgent,
  waitFor,
} from "./helpers.mjs";

const sorted = (ids) => [...ids].sort();

test("every session arrives exactly once while the API is stopped and started again", async () => {
  const api = await ownApi();
  const agent = uniqueAgent("ts-restart");
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: api.url, batchSize: 25, ...fast() });
  const tracker = client.getSessionTracker();
  try {
    const sent = [];
    for (let n = 0; n < 100; n++) sent.push(recordSession(tracker, n, { agent }));
    assert.equal(await client.flush(30_000), true);
    await api.stop();
    for (let n = 100; n < 400; n++) sent.push(recordSession(tracker, n, { agent })); // while the API is down
    await waitFor(() => client.stats().retried >= 3); // the client has met the outage
    await api.start();
    for (let n = 400; n < 500; n++) sent.push(recordSession(tracker, n, { agent }));
    assert.equal(await client.flush(60_000), true);

    const stored = await storedIds(agent, api.url);
    assert.equal(stored.length, 500); // none twice...
    assert.deepEqual(stored, sorted(sent)); // ...none lost
    const stats = client.stats();
    assert.equal(stats.sent, 500);
    assert.deepEqual(stats.dropped, {});
  } finally {
    await client.shutdown(1000);
    await api.stop();
  }
});

test("503 and 429 are retried after their Retry-After", async () => {
  const agent = uniqueAgent("ts-retry-after");
  const proxy = await faultyProxy(endpoint(), (request) =>
    request.number % 3 === 1 ? { status: 503, retryAfter: "0" } : request.number % 3 === 2 ? { status: 429, retryAfter: "1" } : null,
  );
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: proxy.url, batchSize: 5, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    const sent = Array.from({ length: 10 }, (_, n) => recordSession(tracker, n, { agent }));
    const started = performance.now();
    assert.equal(await client.flush(60_000), true);
    const elapsed = performance.now() - started;

    assert.deepEqual(await storedIds(agent), sorted(sent));
    const stats = client.stats();
    // Every batch met a 503 then a 429, each answered by a retry of that same batch.
    assert.equal(stats.batches, 2);
    assert.equal(stats.retried, 4);
    assert.deepEqual(proxy.log.slice(0, 3).map((r) => r.sessionIds), Array(3).fill(proxy.log[0].sessionIds));
    assert.ok(elapsed >= 2 * 1000, `each 429 asked for a second; the flush took ${elapsed} ms`);
  } finally {
    await client.shutdown(1000);
    await proxy.close();
  }
});

test("a slow answer times out and the resend is not stored twice", async () => {
  const agent = uniqueAgent("ts-slow");
  const proxy = await faultyProxy(endpoint(), (request) => (request.number % 2 === 1 ? { delay: 1500 } : null));
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: proxy.url, batchSize: 10, requestTimeout: 500, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    const sent = Array.from({ length: 20 }, (_, n) => recordSession(tracker, n, { agent }));
    assert.equal(await client.flush(60_000), true);
    await proxy.idle(); // the timed-out requests, forwarded late, have been answered too

    assert.deepEqual(await storedIds(agent), sorted(sent));
    const stats = client.stats();
    assert.equal(stats.sent, 20);
    assert.equal(stats.retried, stats.batches);
    // The late copies reached the API too, which counted them as duplicates.
    assert.equal(proxy.log.filter((r) => r.status === 200).length, 2 * stats.batches);
  } finally {
    await client.shutdown(1000);
    await proxy.close();
  }
});

test("413 splits the batch until the parts fit, in the sessions' order", async () => {
  const agent = uniqueAgent("ts-413");
  const proxy = await faultyProxy(endpoint(), (request) => (request.sessionIds.length > 3 ? { status: 413 } : null));
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: proxy.url, batchSize: 10, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    const sent = Array.from({ length: 10 }, (_, n) => recordSession(tracker, n, { agent }));
    assert.equal(await client.flush(30_000), true);
    assert.deepEqual(await storedIds(agent), sorted(sent));
    // 10 -> 5 + 5 -> (2 + 3) + (2 + 3)
    assert.deepEqual(proxy.log.map((r) => r.sessionIds.length), [10, 5, 2, 3, 5, 2, 3]);
    assert.deepEqual(proxy.log.filter((r) => r.status === 200).flatMap((r) => r.sessionIds), sent);
    assert.equal(client.stats().retried, 0);
    assert.deepEqual(client.stats().dropped, {});
  } finally {
    await client.shutdown(1000);
    await proxy.close();
  }
});

test("a batch the API keeps failing goes to the back of the queue and only its culprit is dropped", async () => {
  const agent = uniqueAgent("ts-poison");
  let release;
  const firstMayAnswer = new Promise((resolve) => (release = resolve));
  let poison = null;
  const proxy = await faultyProxy(endpoint(), (request) => {
    // The API fails on any batch holding the poison session; the first request waits until
    // every session has been recorded, so what is queued behind it is known.
    const hold = request.number === 1 ? firstMayAnswer : undefined;
    return request.sessionIds.includes(poison) ? { status: 500, hold } : { hold };
  });
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: proxy.url, batchSize: 10, serverErrorAttempts: 2, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    const first = [];
    for (let n = 0; n < 10; n++) {
      const id = recordSession(tracker, n, { agent });
      if (n === 3) poison = id;
      else first.push(id);
    }
    await waitFor(() => proxy.log.length === 1);
    const newer = Array.from({ length: 20 }, (_, n) => recordSession(tracker, 10 + n, { agent }));
    release();
    assert.equal(await client.flush(60_000), true);

    assert.deepEqual(await storedIds(agent), sorted([...first, ...newer]));
    assert.deepEqual(client.stats().dropped, { server_error: 1 });
    const poisoned = proxy.log.filter((r) => r.sessionIds.includes(poison));
    const newerDelivered = proxy.log.filter((r) => r.status === 200 && r.sessionIds.some((id) => newer.includes(id)));
    // The newer sessions went out while the failing batch waited at the back of the queue...
    assert.ok(Math.max(...newerDelivered.map((r) => r.number)) < Math.max(...poisoned.map((r) => r.number)));
    // ...and it was halved, two tries each time, until the poison session (the 4th) was alone.
    assert.deepEqual(poisoned.map((r) => r.sessionIds.length), [10, 10, 5, 5, 3, 3, 2, 2, 1, 1]);
  } finally {
    await client.shutdown(1000);
    await proxy.close();
  }
});

test("rejected sessions are counted and never retried; client errors drop their batch", async () => {
  const agent = uniqueAgent("ts-rejected");
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: endpoint(), batchSize: 100, ...fast() });
  const refused = new BagulaClient({ apiKey: "bgl_wrong", endpoint: endpoint(), batchSize: 100, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    const good = Array.from({ length: 4 }, (_, n) => recordSession(tracker, n, { agent }));
    recordSession(tracker, 99, { agent, outcome: { userSatisfaction: 9 } }); // out of 1-5: a 207
    assert.equal(await client.flush(30_000), true);
    assert.deepEqual(await storedIds(agent), sorted(good));
    let stats = client.stats();
    assert.deepEqual([stats.sent, stats.rejected, stats.retried], [4, 1, 0]);

    recordSession(tracker, 100, { agent, outcome: { userSatisfaction: 0 } }); // alone: a 422
    assert.equal(await client.flush(30_000), true);
    stats = client.stats();
    assert.deepEqual([stats.sent, stats.rejected, stats.retried, stats.dropped], [4, 2, 0, {}]);

    recordSession(refused.getSessionTracker(), 1, { agent }); // a 401
    assert.equal(await refused.flush(30_000), true);
    assert.deepEqual(refused.stats().dropped, { client_error: 1 });
    assert.equal(refused.stats().retried, 0);
  } finally {
    await client.shutdown(1000);
    await refused.shutdown(1000);
  }
});

test("a session that cannot be encoded is dropped alone, never its batch", async () => {
  const agent = uniqueAgent("ts-encode");
  const { lines, logger } = recordingLogger();
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: endpoint(), batchSize: 50, ...fast({ logger }) });
  try {
    const tracker = client.getSessionTracker();
    const circular = { name: "loop" };
    circular.self = circular;
    const exploding = {
      get value() {
        throw new Error("a getter that throws");
      },
    };
    const good = Array.from({ length: 5 }, (_, n) => recordSession(tracker, n, { agent }));
    const odd = recordSession(tracker, 5, { agent, metadata: { big: 12345678901234567890n, nan: NaN } });
    const loop = recordSession(tracker, 6, { agent, metadata: circular });
    const broken = recordSession(tracker, 7, { agent, metadata: exploding });
    good.push(...Array.from({ length: 4 }, (_, n) => recordSession(tracker, 8 + n, { agent })));
    assert.equal(await client.flush(30_000), true);

    assert.deepEqual(await storedIds(agent), sorted([...good, odd, loop]));
    assert.deepEqual(client.stats().dropped, { unencodable: 1 });
    assert.ok(lines.some((line) => line.startsWith("error") && line.includes(broken)), lines.join("\n"));
    assert.deepEqual((await readSession(odd)).metadata, { big: "12345678901234567890", nan: null });
    assert.deepEqual((await readSession(loop)).metadata, { name: "loop", self: "[Circular]" });
  } finally {
    await client.shutdown(1000);
  }
});

const SECRETS = ["alice@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "sk-proj-abcdefghijklmnopqrstuvwx123", "555-123-4567"];

test("redacted values never reach the API's store, and the agent's objects are untouched", async () => {
  const agent = uniqueAgent("ts-redact");
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: endpoint(), batchSize: 50, redact: redactors.pii, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    const messages = [{ role: "user", content: `I am ${SECRETS[0]}, call ${SECRETS[1]}` }];
    const sessionId = tracker.startSession(agent, `charge ${SECRETS[2]}`, { metadata: { contact: SECRETS[0] } });
    const turn = tracker.turn(sessionId, { type: "user_message", content: messages[0].content });
    tracker.recordLLMCall(sessionId, turn.turnId, {
      provider: "openai", model: "gpt-4o", startTime: Date.now() - 5, endTime: Date.now(),
      messages, response: { content: `key ${SECRETS[3]} used` },
    });
    await turn.toolCall("charge", { card: SECRETS[2] }, async () => ({ to: SECRETS[0] }));
    await assert.rejects(turn.toolCall("notify", { phone: SECRETS[4] }, async () => {
      throw new Error(`call ${SECRETS[4]} failed`);
    }));
    turn.respond(`charged ${SECRETS[2]}`);
    turn.feedback(`mail ${SECRETS[0]}`);
    tracker.completeSession(sessionId, { status: "success", result: `receipt to ${SECRETS[0]}` });
    assert.equal(await client.flush(30_000), true);

    const stored = await readSession(sessionId); // the whole session as the database holds it
    const text = JSON.stringify(stored);
    assert.deepEqual(SECRETS.filter((secret) => text.includes(secret)), []);
    assert.equal(stored.initialRequest, "charge [REDACTED:card]");
    const [charge, notify] = stored.turns[0].agentResponse.toolCalls;
    assert.deepEqual([charge.arguments, charge.result], [{ card: "[REDACTED:card]" }, { to: "[REDACTED:email]" }]);
    assert.equal(notify.error, "Error: call [REDACTED:phone] failed");
    assert.ok(messages[0].content.startsWith("I am alice@")); // the agent's own objects are untouched
  } finally {
    await client.shutdown(1000);
  }
});

test("a redaction hook that throws drops its session rather than send it unredacted", async () => {
  const agent = uniqueAgent("ts-redact-fail");
  const picky = (value) => {
    if (JSON.stringify(value).includes("secret")) throw new Error("cannot redact this");
    return value;
  };
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: endpoint(), batchSize: 50, redact: picky, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    const kept = recordSession(tracker, 1, { agent });
    tracker.completeSession(tracker.startSession(agent, "a secret request"), { status: "success" });
    assert.equal(await client.flush(30_000), true);
    assert.deepEqual(await storedIds(agent), [kept]);
    assert.deepEqual(client.stats().dropped, { redaction_error: 1 });
  } finally {
    await client.shutdown(1000);
  }
});

test("a session never completed is sent as abandoned after the session timeout, ending at its last activity", async () => {
  const agent = uniqueAgent("ts-abandon");
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: endpoint(), batchSize: 50, sessionTimeout: 300, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    const sessionId = tracker.startSession(agent, "help me", { userId: "u-1" });
    const turnId = tracker.startTurn(sessionId, "help me");
    tracker.recordLLMCall(sessionId, turnId, { provider: "openai", model: "gpt-4o", startTime: Date.now() - 50, endTime: Date.now() });
    const finished = recordSession(tracker, 1, { agent });
    // Nobody flushes: the client's own sweep finds the session past its timeout and sends it.
    await waitFor(async () => (await storedIds(agent)).length === 2);

    const session = await readSession(sessionId);
    assert.equal(session.finalOutcome.status, "abandoned");
    assert.equal(session.endTime, session.turns[0].llmCalls[0].endTime);
    assert.equal(tracker.completeSession(sessionId, { status: "success" }), false); // too late: already sent
    assert.deepEqual(await storedIds(agent), sorted([sessionId, finished]));
    const stats = client.stats();
    assert.deepEqual([stats.abandoned, stats.open, stats.sent], [1, 0, 2]);
  } finally {
    await client.shutdown(1000);
  }
});

test("open sessions are bounded, and those still open at shutdown are sent as abandoned", async () => {
  const agent = uniqueAgent("ts-open");
  const client = new BagulaClient({ apiKey: apiKey(), endpoint: endpoint(), batchSize: 50, maxOpenSessions: 3, ...fast() });
  const tracker = client.getSessionTracker();
  const opened = Array.from({ length: 5 }, (_, n) => tracker.startSession(agent, `request ${n}`));
  assert.equal(client.stats().open, 3); // the two oldest were sent as abandoned to make room
  assert.equal(await client.flush(30_000), true);
  assert.deepEqual(await storedIds(agent), sorted(opened.slice(0, 2)));

  assert.equal(await client.shutdown(), true);
  assert.deepEqual(await storedIds(agent), sorted(opened));
  const statuses = new Set((await storedSessions(agent)).map((s) => s.status));
  assert.deepEqual([...statuses], ["abandoned"]);
  assert.equal(client.stats().abandoned, 5);
  assert.equal(tracker.completeSession(tracker.startSession(agent, "late"), { status: "success" }), false); // closed
  assert.deepEqual(client.stats().dropped, { closed: 1 });
});

test("the queue stays bounded when the API never answers, and everything lost is counted once", async () => {
  const silent = await silentServer();
  const client = new BagulaClient({ apiKey: "bgl_x", endpoint: silent.url, batchSize: 50, maxQueueSize: 100, requestTimeout: 30_000, ...fast() });
  try {
    const tracker = client.getSessionTracker();
    for (let n = 0; n < 200; n++) recordSession(tracker, n);
    await waitFor(() => silent.received() > 0); // the sender took a batch, which now hangs
    for (let n = 200; n < 2000; n++) recordSession(tracker, n);
    const stats = client.stats();
    // A full queue plus the one batch in flight; every other session refused at the door.
    assert.equal(stats.queued, 150);
    assert.deepEqual(stats.dropped, { queue_full: 1850 });
    const started = performance.now();
    assert.equal(await client.shutdown(500), false);
    assert.ok(performance.now() - started < 1500);
    assert.deepEqual(client.stats().dropped, { queue_full: 1850, shutdown: 150 });
    assert.equal(client.stats().queued, 0);
  } finally {
    await silent.close();
  }
});

test("recording never throws into the agent, whatever it is given", () => {
  const { lines, logger } = recordingLogger();
  const client = new BagulaClient({ apiKey: "bgl_x", endpoint: "http://127.0.0.1:9", ...fast({ logger }) });
  const tracker = client.getSessionTracker();
  assert.equal(tracker.startTurn("no-such-session", "x"), "turn-unknown");
  assert.equal(tracker.recordLLMCall("no-such-session", "t", { provider: "p", model: "m", startTime: 1 }), undefined);
  tracker.recordAgentResponse("no-such-session", "t", { toolCalls: [null] });
  tracker.recordUserFeedback("no-such-session", "t", "x");
  assert.equal(tracker.completeSession("no-such-session", { status: "success" }), false);
  const sessionId = tracker.startSession("a", "r");
  tracker.recordAgentResponse(sessionId, tracker.startTurn(sessionId, "t"), { toolCalls: [null] });
  assert.ok(lines.filter((line) => line.startsWith("warn")).length >= 6, lines.join("\n"));
  return client.shutdown(0);
});
