// One wire format, two clients: the TypeScript client against the shared vectors in sdk/testdata/
// (the Python client's suite, tests/sdk/test_vectors.py, checks the same files).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { SessionTracker, redactors } from "@bagula/client";

import { encodeSession } from "../dist/esm/wire.js";
import { TESTDATA } from "./helpers.mjs";

const { vectors } = JSON.parse(readFileSync(join(TESTDATA, "sessions.json"), "utf8"));
const { cases } = JSON.parse(readFileSync(join(TESTDATA, "redaction.json"), "utf8"));

function perform(tracker, step) {
  const { now: _now, call, ...args } = step;
  switch (call) {
    case "startSession": {
      const { agentName, initialRequest, ...options } = args;
      return tracker.startSession(agentName, initialRequest, options);
    }
    case "startTurn": {
      const { sessionId, trigger, ...options } = args;
      return tracker.startTurn(sessionId, trigger, options);
    }
    case "recordLLMCall": {
      const { sessionId, turnId, ...input } = args;
      return tracker.recordLLMCall(sessionId, turnId, input);
    }
    case "recordAgentResponse": {
      const { sessionId, turnId, ...input } = args;
      return tracker.recordAgentResponse(sessionId, turnId, input);
    }
    case "recordUserFeedback":
      return tracker.recordUserFeedback(args.sessionId, args.turnId, args.feedback);
    case "completeSession": {
      const { sessionId, ...outcome } = args;
      return tracker.completeSession(sessionId, outcome);
    }
    case "abandonExpired":
      return tracker.abandonExpired();
    default:
      throw new Error(`unknown call ${call} in the vectors`);
  }
}

test("every shared session vector: the tracker calls produce exactly its sessions", async (t) => {
  assert.ok(vectors.length >= 7);
  for (const vector of vectors) {
    await t.test(vector.name, () => {
      const options = vector.options ?? {};
      const clock = { now: 0 };
      const sent = [];
      const tracker = new SessionTracker(
        { enqueue: (session) => sent.push(session) > 0 },
        {
          sessionTimeout: options.sessionTimeoutMs ?? 1_800_000,
          maxOpenSessions: options.maxOpenSessions ?? 10_000,
          logger: { warn: () => undefined, error: () => undefined },
          now: () => clock.now,
          monotonic: () => clock.now,
        },
      );
      const redact = options.redact ? redactors[options.redact] : null;
      for (const step of vector.steps) {
        clock.now = step.now;
        perform(tracker, step);
      }
      const onTheWire = sent.map((session) => JSON.parse(encodeSession(session, redact)));
      assert.deepStrictEqual(onTheWire, vector.sent);
    });
  }
});

test("every shared redaction vector: the ready redactors give its output", async (t) => {
  for (const { redactor, input, output } of cases) {
    await t.test(`${redactor}: ${input.slice(0, 40)}`, () => {
      assert.equal(redactors[redactor](input, "message"), output);
    });
  }
});

test("the vectors cover every tracker call, option and ready redactor", () => {
  const calls = new Set(vectors.flatMap((v) => v.steps.map((s) => s.call)));
  assert.deepEqual([...calls].sort(), [
    "abandonExpired", "completeSession", "recordAgentResponse", "recordLLMCall", "recordUserFeedback", "startSession", "startTurn",
  ]);
  const options = new Set(vectors.flatMap((v) => Object.keys(v.options ?? {})));
  assert.deepEqual([...options].sort(), ["maxOpenSessions", "redact", "sessionTimeoutMs"]);
  assert.deepEqual([...new Set(cases.map((c) => c.redactor))].sort(), ["apiKeys", "cardNumbers", "emails", "phoneNumbers", "pii"]);
});
