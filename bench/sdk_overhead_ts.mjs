// What instrumenting costs the agent's event loop: time per @bagula/client call, while
// batches are being sent.
//
//     (cd sdk/typescript && npm ci && npm run build)
//     node bench/sdk_overhead_ts.mjs [--sessions 20000] [--redact]
//
// A stub ingest endpoint runs in a separate process and acknowledges every batch. The agent
// awaits the event loop between calls (as it awaits its LLM and tools), so the client's sender
// really encodes, compresses and posts between them; each call is timed on its own. The same
// session as bench/sdk_overhead.py, the Python client's benchmark. `--redact` sets the `pii`
// redactor (it runs when a batch is encoded, not in the calls) and also reports what encoding
// one session costs the sender with and without it.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "sdk", "typescript", "dist", "esm");
const { BagulaClient, redactors } = await import(pathToFileURL(join(dist, "index.js")).href);
const { encodeSession } = await import(pathToFileURL(join(dist, "wire.js")).href);

const { values: args } = parseArgs({ options: { sessions: { type: "string", default: "20000" }, redact: { type: "boolean", default: false } } });
const sessions = Number(args.sessions);

const STUB = `
  const http = require("node:http"), zlib = require("node:zlib");
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(zlib.gunzipSync(Buffer.concat(chunks)));
      res.end(JSON.stringify({ stored: body.sessions.length, duplicates: 0, rejected: [] }));
    });
  });
  server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;
const stub = spawn(process.execPath, ["-e", STUB], { stdio: ["ignore", "pipe", "inherit"] });
const [portLine] = await once(stub.stdout, "data");
const port = Number(String(portLine).trim());

const client = new BagulaClient({
  apiKey: "bgl_bench", endpoint: `http://127.0.0.1:${port}`, batchSize: 50, flushInterval: 1000,
  maxQueueSize: sessions + 1, logger: null, flushAtExit: false, redact: args.redact ? redactors.pii : null,
});
const tracker = client.getSessionTracker();
const names = ["startSession", "startTurn", "recordLLMCall", "recordAgentResponse", "completeSession"];
const timings = Object.fromEntries(names.map((name) => [name, new Float64Array(sessions)]));
const messages = [{ role: "user", content: "x".repeat(300) }];
const tick = () => new Promise((resolve) => setImmediate(resolve));
const clock = process.hrtime.bigint;
const us = (a, b) => Number(b - a) / 1000;

for (let n = 0; n < sessions; n++) {
  const t0 = clock();
  const sessionId = tracker.startSession("bench-agent", "request", { userId: "u", metadata: { n } });
  const t1 = clock();
  timings.startSession[n] = us(t0, t1);
  await tick();
  const t2 = clock();
  const turnId = tracker.startTurn(sessionId, { type: "user_message", content: "hello" });
  const t3 = clock();
  timings.startTurn[n] = us(t2, t3);
  await tick();
  const t4 = clock();
  tracker.recordLLMCall(sessionId, turnId, {
    provider: "openai", model: "gpt-4o", startTime: 1_764_000_000_000, endTime: 1_764_000_001_000, messages,
    response: { content: "ok" }, metrics: { tokensInput: 300, tokensOutput: 40, costUsd: 0.0012 },
  });
  const t5 = clock();
  timings.recordLLMCall[n] = us(t4, t5);
  await tick();
  const t6 = clock();
  tracker.recordAgentResponse(sessionId, turnId, {
    message: "done",
    toolCalls: [{ toolId: "call_1", toolName: "search", arguments: { q: "x" }, startTime: 1_764_000_001_000, endTime: 1_764_000_001_050, result: { hits: 3 } }],
  });
  const t7 = clock();
  timings.recordAgentResponse[n] = us(t6, t7);
  await tick();
  const t8 = clock();
  tracker.completeSession(sessionId, { status: "success", result: "ok", userSatisfaction: 5 });
  const t9 = clock();
  timings.completeSession[n] = us(t8, t9);
  await tick();
}
const drainStarted = performance.now();
await client.flush(120_000);
const drain = performance.now() - drainStarted;
const stats = client.stats();
await client.shutdown(1000);
stub.kill();

const quantile = (values, q) => {
  const sorted = Float64Array.from(values).sort();
  return q === 0.5 ? (sorted[(sorted.length - 1) >> 1] + sorted[sorted.length >> 1]) / 2 : sorted[Math.floor(sorted.length * q)];
};
console.log(`${sessions} sessions recorded while the sender posted ${stats.batches} batches (Node ${process.versions.node}${args.redact ? ", pii redactor set" : ""})`);
console.log(`${"call".padEnd(24)}${"median µs".padStart(10)}${"p99 µs".padStart(10)}`);
for (const name of names) {
  console.log(`${name.padEnd(24)}${quantile(timings[name], 0.5).toFixed(2).padStart(10)}${quantile(timings[name], 0.99).toFixed(2).padStart(10)}`);
}
const perSession = Float64Array.from({ length: sessions }, (_, i) => names.reduce((sum, name) => sum + timings[name][i], 0));
console.log(`${"whole session (5 calls)".padEnd(24)}${quantile(perSession, 0.5).toFixed(2).padStart(10)}${quantile(perSession, 0.99).toFixed(2).padStart(10)}`);
console.log(`left to send after the last call: ${drain.toFixed(0)} ms; stats: ${JSON.stringify(stats)}`);

if (args.redact) {
  // What the sender spends per session when it encodes a batch, with and without the hook.
  const sample = { sessionId: "s", agentName: "bench-agent", userId: "u", initialRequest: "request", startTime: 1, endTime: 2,
    metadata: { n: 1 }, tags: null, parentSessionId: null, finalOutcome: { status: "success", result: "ok", userSatisfaction: 5, confidence: null },
    turns: [{ turnId: "turn-1", turnNumber: 1, timestamp: 1, trigger: { type: "user_message", content: "hello" }, userFeedback: null,
      llmCalls: [{ callId: "c", provider: "openai", model: "gpt-4o", startTime: 1, endTime: 2, messages, response: { content: "ok" },
        metrics: { tokensInput: 300, tokensOutput: 40, tokensTotal: 340, costUsd: 0.0012, latencyMs: 1000 } }],
      agentResponse: { message: "done", toolCalls: [{ toolId: "call_1", toolName: "search", arguments: { q: "x" }, startTime: 1, endTime: 2, result: { hits: 3 }, error: null, latencyMs: 1 }] } }] };
  for (const [label, redact] of [["encode, no hook", null], ["encode, pii redactor", redactors.pii]]) {
    const rounds = 20_000;
    for (let i = 0; i < 2000; i++) encodeSession(sample, redact);
    const started = clock();
    for (let i = 0; i < rounds; i++) encodeSession(sample, redact);
    console.log(`sender, per session, ${label}: ${(us(started, clock()) / rounds).toFixed(2)} µs`);
  }
}
