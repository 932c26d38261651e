// The seed's TypeScript example (examples/seed-agent.ts), compiled and run unchanged as a process
// of its own: the real `openai` package, pointed (OPENAI_BASE_URL) at a stub that answers like
// chat completions, and the real Bagula API. Its one session must read back whole.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import * as http from "node:http";
import { join } from "node:path";
import { test } from "node:test";

import { PACKAGE_ROOT, apiKey, endpoint, readSession, storedSessions } from "./helpers.mjs";

const USAGE = [
  { prompt_tokens: 812, completion_tokens: 95, total_tokens: 907 },
  { prompt_tokens: 930, completion_tokens: 14, total_tokens: 944 },
];
const ANSWER = "Your order #42 has shipped and arrives tomorrow.";
const GPT4_PER_MILLION = { input: 30, output: 60 }; // list price the example's calculateCost uses

/** Chat completions as OpenAI answers them: a tool call first, then the final answer. */
async function openAiStub() {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    const request = JSON.parse(body);
    requests.push({ path: req.url, body: request });
    const first = requests.length === 1;
    const message = first
      ? { role: "assistant", content: null, refusal: null,
          tool_calls: [{ id: "call_abc123", type: "function", function: { name: "search_orders", arguments: '{"orderId":"42"}' } }] }
      : { role: "assistant", content: ANSWER, refusal: null };
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({
      id: `chatcmpl-${requests.length}`, object: "chat.completion", created: Math.floor(Date.now() / 1000), model: request.model,
      choices: [{ index: 0, message, logprobs: null, finish_reason: first ? "tool_calls" : "stop" }],
      usage: USAGE[requests.length - 1],
    }));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { url: `http://127.0.0.1:${server.address().port}/v1`, requests, close: () => new Promise((r) => server.close(r)) };
}

test("the seed's example runs unchanged, and its session reads back from the API whole", async () => {
  const openai = await openAiStub();
  try {
    const child = spawn(process.execPath, [join(PACKAGE_ROOT, "build", "examples", "seed-agent.js"), "Where is my order #42?", "u-42"], {
      cwd: PACKAGE_ROOT,
      env: { ...process.env, BAGULA_API_KEY: apiKey(), BAGULA_ENDPOINT: endpoint(), OPENAI_API_KEY: "sk-stub", OPENAI_BASE_URL: openai.url },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const [code] = await once(child, "exit");
    assert.equal(code, 0, stderr);
    assert.equal(stdout.trim(), ANSWER);
    // The example ran the real loop: the second call carried the tool's result back to the model.
    assert.deepEqual(openai.requests.map((r) => r.path), ["/v1/chat/completions", "/v1/chat/completions"]);
    assert.deepEqual(openai.requests[1].body.messages.at(-1), {
      role: "tool", tool_call_id: "call_abc123", content: '{"status":"shipped","eta":"tomorrow"}',
    });

    // The session went out when the process was about to exit (batch size 50 was never reached).
    const [summary, ...others] = await storedSessions("customer-support-agent");
    assert.deepEqual(others, []);
    assert.deepEqual(
      [summary.status, summary.userSatisfaction, summary.turnCount, summary.llmCallCount, summary.toolCallCount, summary.tokensTotal],
      ["success", 5, 2, 2, 1, 907 + 944],
    );
    const session = await readSession(summary.sessionId);
    assert.equal(session.userId, "u-42");
    assert.equal(session.initialRequest, "Where is my order #42?");
    assert.deepEqual(session.metadata, { channel: "web" });
    assert.deepEqual(session.finalOutcome, { status: "success", result: ANSWER, userSatisfaction: 5, confidence: null });
    const [first, second] = session.turns;
    assert.deepEqual(first.trigger, { type: "user_message", content: "Where is my order #42?" });
    const [call] = first.llmCalls;
    const cost = (usage) => (usage.prompt_tokens * GPT4_PER_MILLION.input + usage.completion_tokens * GPT4_PER_MILLION.output) / 1e6;
    assert.deepEqual([call.callId, call.provider, call.model], ["llm-1", "openai", "gpt-4"]);
    assert.deepEqual(
      [call.metrics.tokensInput, call.metrics.tokensOutput, call.metrics.tokensTotal, call.metrics.costUsd],
      [812, 95, 907, cost(USAGE[0])],
    );
    assert.equal(call.metrics.latencyMs, call.endTime - call.startTime);
    assert.equal(call.response.tool_calls[0].function.name, "search_orders");
    const [tool] = first.agentResponse.toolCalls;
    assert.deepEqual(
      [tool.toolId, tool.toolName, tool.arguments, tool.result, tool.error],
      ["call_abc123", "search_orders", '{"orderId":"42"}', { status: "shipped", eta: "tomorrow" }, null],
    );
    assert.equal(tool.latencyMs, tool.endTime - tool.startTime);
    assert.deepEqual([second.turnNumber, second.llmCalls[0].callId, second.llmCalls[0].response.content], [2, "llm-2", ANSWER]);
    assert.equal(second.llmCalls[0].metrics.costUsd, cost(USAGE[1]));
    assert.equal(second.agentResponse, null);
  } finally {
    await openai.close();
  }
});
