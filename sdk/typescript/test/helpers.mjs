// Helpers of the Node test suite: the real API (BAGULA_ENDPOINT, BAGULA_API_KEY, given by the test
// command), an API of our own to stop and restart (BAGULA_PYTHON, BAGULA_DATABASE_URL), a proxy
// that injects faults, a server that never answers, child processes.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import * as http from "node:http";
import * as net from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";

export const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
export const TESTDATA = join(PACKAGE_ROOT, "..", "testdata");

export function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the Node tests through the test command (tests/sdk/test_typescript.py)`);
  return value;
}

export const endpoint = () => requireEnv("BAGULA_ENDPOINT");
export const apiKey = () => requireEnv("BAGULA_API_KEY");

/** Fast settings for tests: short intervals and backoff, no console noise, no exit hooks. */
export function fast(extra = {}) {
  return { flushInterval: 200, initialBackoff: 50, maxBackoff: 500, logger: null, flushAtExit: false, ...extra };
}

/** A logger that keeps what it is told. */
export function recordingLogger() {
  const lines = [];
  const keep = (level) => (message) => lines.push(`${level} ${message}`);
  return { lines, logger: { debug: keep("debug"), info: keep("info"), warn: keep("warn"), error: keep("error") } };
}

export const uniqueAgent = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;

export async function getJson(path, base = endpoint(), key = apiKey()) {
  const response = await fetch(base + path, { headers: { Authorization: `Bearer ${key}` } });
  if (response.status !== 200) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

/** Every stored session of an agent (summaries), through the API's pagination. */
export async function storedSessions(agent, base = endpoint()) {
  const all = [];
  let cursor = null;
  do {
    const page = await getJson(`/v1/agents/${encodeURIComponent(agent)}/sessions?limit=500${cursor ? `&cursor=${cursor}` : ""}`, base);
    all.push(...page.sessions);
    cursor = page.nextCursor;
  } while (cursor);
  return all;
}

export const storedIds = async (agent, base) => (await storedSessions(agent, base)).map((s) => s.sessionId).sort();

export const readSession = (sessionId, base) => getJson(`/v1/sessions/${sessionId}`, base);

/** One complete session through the seed's tracker calls (as tests/support/sdk.py's record_session). */
export function recordSession(tracker, n, { agent = "ts-sdk-agent", metadata, outcome = {} } = {}) {
  const sessionId = tracker.startSession(agent, `request ${n}`, { userId: `user-${n % 7}`, metadata: metadata ?? { n } });
  const turnId = tracker.startTurn(sessionId, { type: "user_message", content: `hello ${n}` });
  const now = Date.now();
  tracker.recordLLMCall(sessionId, turnId, {
    provider: "openai",
    model: "gpt-4o",
    startTime: now - 900,
    endTime: now - 100,
    messages: [{ role: "user", content: "hi" }],
    response: { content: "hello" },
    metrics: { tokensInput: 100 + n, tokensOutput: 20, costUsd: 0.001 * n },
  });
  tracker.recordAgentResponse(sessionId, turnId, {
    message: "done",
    toolCalls: [{ toolId: "call_1", toolName: "search", arguments: { q: n }, startTime: now - 90, endTime: now - 10, result: { hits: n } }],
  });
  tracker.completeSession(sessionId, { status: "success", result: "ok", ...outcome });
  return sessionId;
}

/** Wait for something produced elsewhere (a server, another process) to become true. */
export async function waitFor(predicate, { timeout = 30_000, interval = 25 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

export async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** `bagula api` on the test database, in a process this test may stop and start again. */
export async function ownApi() {
  const python = requireEnv("BAGULA_PYTHON");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let child = null;
  let output = "";
  const api = {
    url,
    async start() {
      child = spawn(python, ["-m", "bagula", "api", "--port", String(port)], {
        env: { ...process.env, BAGULA_DATABASE_URL: requireEnv("BAGULA_DATABASE_URL"), BAGULA_API_WORKERS: "1" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      await waitFor(async () => {
        if (child.exitCode !== null) throw new Error(`the API exited: ${output}`);
        try {
          return (await fetch(`${url}/healthz`)).status === 200;
        } catch {
          return false;
        }
      }, { interval: 100 });
    },
    async stop() {
      if (child && child.exitCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
    },
  };
  await api.start();
  return api;
}

/**
 * Forwards to the real API, except where `plan(request)` injects a fault: `{status, retryAfter}`
 * answers itself, `{delay}` forwards late, `{hold}` (a promise) waits first. `log` lists every
 * request: its number, the session ids in its body, the status answered.
 */
export async function faultyProxy(upstream, plan) {
  const log = [];
  let inProgress = 0;
  const target = new URL(upstream);
  const server = http.createServer(async (req, res) => {
    inProgress += 1;
    try {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      const body = Buffer.concat(chunks);
      let sessionIds = [];
      try {
        sessionIds = JSON.parse(gunzipSync(body).toString("utf8")).sessions.map((s) => s.sessionId);
      } catch {
        sessionIds = [];
      }
      const request = { number: log.length + 1, sessionIds, status: null };
      log.push(request);
      const fault = plan(request) ?? {};
      if (fault.hold) await fault.hold;
      if (fault.status) {
        request.status = fault.status;
        const headers = { "Content-Type": "application/json" };
        if (fault.retryAfter !== undefined) headers["Retry-After"] = fault.retryAfter;
        res.writeHead(fault.status, headers).end('{"detail":"injected fault"}');
        return;
      }
      if (fault.delay) await new Promise((resolve) => setTimeout(resolve, fault.delay));
      const headers = {};
      for (const name of ["authorization", "content-type", "content-encoding"]) if (req.headers[name]) headers[name] = req.headers[name];
      const answer = await fetch(new URL(req.url, target), { method: "POST", headers, body });
      request.status = answer.status;
      const text = await answer.text();
      if (!res.destroyed) res.writeHead(answer.status, { "Content-Type": "application/json" }).end(text);
    } catch (error) {
      if (!res.headersSent && !res.destroyed) res.writeHead(502).end(String(error));
    } finally {
      inProgress -= 1;
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    log,
    /** Until every request received so far has been answered (forwarded ones included). */
    idle: () => waitFor(() => inProgress === 0),
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Accepts TCP connections, reads what comes, and never answers a byte. */
export async function silentServer() {
  const sockets = new Set();
  let received = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("data", (data) => (received += data.length));
    socket.on("error", () => undefined);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Bytes of requests received so far. */
    received: () => received,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A Node script in a child process (ESM; it imports "@bagula/client" as a user would); its
 * arguments are process.argv.slice(2), as in a script file. */
export function runNode(code, { env = {}, args = [], timeout = 30_000 } = {}) {
  const child = spawn(process.execPath, ["--input-type=module", "-e", code, "--", "[eval]", ...args], {
    cwd: PACKAGE_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  // A child that outlives `timeout` is killed: a process kept alive is a failure, not a hang.
  let timedOut = false;
  const killer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeout);
  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, timedOut, get stdout() { return stdout; }, get stderr() { return stderr; } });
    });
  });
  return { child, exited, output: () => stdout, errors: () => stderr };
}
