// The published shape: ESM and CommonJS builds with the same API, type declarations a
// TypeScript user resolves either way, no runtime dependencies, and a tarball holding the builds
// and the README only.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { PACKAGE_ROOT } from "./helpers.mjs";

const pkg = JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8"));

test("the ESM and the CommonJS build export the same API, at the package's version", async () => {
  const esm = await import("@bagula/client");
  const cjs = createRequire(join(PACKAGE_ROOT, "package.json"))("@bagula/client");
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  for (const name of ["BagulaClient", "SessionTracker", "ToolCallTimer", "TurnScope", "redactors", "VERSION"]) {
    assert.ok(esm[name] && cjs[name], name);
  }
  assert.equal(esm.VERSION, pkg.version);
  assert.equal(cjs.VERSION, pkg.version);
  const client = new cjs.BagulaClient({ apiKey: "bgl_x", endpoint: "http://127.0.0.1:9", logger: null, flushAtExit: false });
  assert.equal(typeof client.getSessionTracker().startSession("a", "r"), "string");
  await client.shutdown(0);
});

test("the exports map points at type declarations that type-check a user's ESM and CommonJS code", () => {
  for (const condition of ["import", "require"]) {
    const entry = pkg.exports["."][condition];
    assert.ok(existsSync(join(PACKAGE_ROOT, entry.types)), entry.types);
    assert.ok(existsSync(join(PACKAGE_ROOT, entry.default)), entry.default);
  }
  const dir = mkdtempSync(join(tmpdir(), "bagula-types-"));
  try {
    const use = `
      const client = new BagulaClient({ apiKey: "k", endpoint: "http://localhost:8000", batchSize: 50, flushInterval: 10000 });
      const tracker = client.getSessionTracker();
      const sessionId: string = tracker.startSession("agent", "request", { userId: "u", metadata: { channel: "web" } });
      const turnId: string = tracker.startTurn(sessionId, { type: "user_message", content: "hi" });
      tracker.recordLLMCall(sessionId, turnId, { callId: "llm-1", provider: "openai", model: "gpt-4", startTime: 1, endTime: 2,
        messages: [], response: {}, metrics: { tokensInput: 1, tokensOutput: 2, tokensTotal: 3, costUsd: 0.1, latencyMs: 1 } });
      tracker.recordAgentResponse(sessionId, turnId, { message: "m", toolCalls: [{ toolId: "t", toolName: "n", arguments: {}, startTime: 1, endTime: 2, result: 1, latencyMs: 1 }] });
      const done: boolean = tracker.completeSession(sessionId, { status: "success", result: "r", userSatisfaction: 5 });
      const flushed: Promise<boolean> = client.flush();
      const stats: ClientStats = client.stats();
      const turn: TurnScope = tracker.turn(sessionId, "next");
      const found: Promise<number> = turn.toolCall("search", { q: 1 }, async () => 42);
      const timer = tracker.startToolCall("lookup", { id: 7 }).end({ name: "Ada" });
      tracker.recordAgentResponse(sessionId, turn.turnId, { message: "m", toolCalls: [timer] });
      turn.respond("done");
      tracker.recordUserFeedback(sessionId, turn.turnId, { thumbs: "up" });
      const redacting = new BagulaClient({ redact: redactors.compose(redactors.pii, (value: unknown, field: string) => field === "arguments" ? "[hidden]" : value) });
      const shutDown: Promise<boolean> = redacting.shutdown();
      // @ts-expect-error: startSession's third argument is an options object
      tracker.startSession("agent", "request", "user-id");
      export { done, flushed, stats, found, shutDown };
    `;
    writeFileSync(join(dir, "use.mts"), `import { BagulaClient, redactors, type ClientStats, type TurnScope } from "@bagula/client";\n${use}`);
    writeFileSync(join(dir, "use.cts"), `import { BagulaClient, redactors, type ClientStats, type TurnScope } from "@bagula/client";\n${use}`);
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "user-app", private: true }));
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify({
      // No @types/node: the package's declarations must not need it.
      compilerOptions: { strict: true, noEmit: true, module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022",
        lib: ["ES2022"], types: [] },
      files: ["use.mts", "use.cts"],
    }));
    // The user's project resolves the package as installed: node_modules/@bagula/client -> this package.
    execFileSync("mkdir", ["-p", join(dir, "node_modules", "@bagula")]);
    execFileSync("ln", ["-s", PACKAGE_ROOT, join(dir, "node_modules", "@bagula", "client")]);
    const tsc = createRequire(join(PACKAGE_ROOT, "package.json")).resolve("typescript/bin/tsc");
    execFileSync(process.execPath, [tsc, "-p", join(dir, "tsconfig.json")], { cwd: dir, stdio: "pipe" });
  } catch (error) {
    assert.fail(`${error.message}\n${error.stdout ?? ""}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("no runtime dependencies, and the tarball holds the builds and the README only", () => {
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.peerDependencies, undefined);
  assert.equal(pkg.engines.node, ">=18");
  const [packed] = JSON.parse(
    execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: PACKAGE_ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }),
  );
  const files = packed.files.map((f) => f.path).sort();
  assert.ok(files.includes("README.md") && files.includes("package.json"));
  assert.ok(files.includes("dist/esm/index.js") && files.includes("dist/esm/index.d.ts"));
  assert.ok(files.includes("dist/cjs/index.js") && files.includes("dist/cjs/index.d.ts") && files.includes("dist/cjs/package.json"));
  assert.deepEqual(files.filter((f) => !/^(dist\/(esm|cjs)\/|README\.md$|package\.json$)/.test(f)), []);
  // Only Node's own modules are imported at run time.
  for (const file of files.filter((f) => f.endsWith(".js"))) {
    const source = readFileSync(join(PACKAGE_ROOT, file), "utf8");
    const imported = [...source.matchAll(/(?:from |require\()"([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(imported.filter((name) => !name.startsWith("node:") && !name.startsWith("./")), [], file);
  }
});

test("the README shows the seed's example exactly as the test suite runs it", () => {
  const readme = readFileSync(join(PACKAGE_ROOT, "README.md"), "utf8");
  const example = readFileSync(join(PACKAGE_ROOT, "examples", "seed-agent.ts"), "utf8");
  assert.ok(readme.includes("```ts\n" + example + "```"), "README.md and examples/seed-agent.ts differ");
});
