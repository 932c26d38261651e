/**
 * Sessions to bytes, one at a time, when a batch is formed: the redaction hook, then JSON.
 * A session that cannot be encoded throws here on its own, so the sender drops that one
 * session and never the batch around it.
 */

import type { Redactor, SessionRecord } from "./types.js";

/** The fields a redaction hook is called on: the free text and payloads of a session. Ids,
 * names, times, numbers, userId and tags are left alone (they are the application's own). */
export const REDACTED_FIELDS = {
  session: ["initialRequest", "metadata"],
  turn: ["trigger", "userFeedback"],
  llmCall: ["messages", "response"],
  agentResponse: ["message"],
  toolCall: ["arguments", "result", "error"],
  finalOutcome: ["result"],
} as const;

export const CIRCULAR = "[Circular]";

export class EncodeError extends Error {
  constructor(
    message: string,
    readonly reason: "unencodable" | "redaction_error",
  ) {
    super(message);
    this.name = "EncodeError";
  }
}

type Plain = Record<string, unknown>;

function redactFields<T extends object>(record: T, fields: readonly string[], redact: Redactor): T {
  const copy = { ...record } as Plain;
  for (const field of fields) {
    const value = copy[field];
    if (value !== null && value !== undefined) copy[field] = redact(value, field);
  }
  return copy as T;
}

/** A copy of the session with `redact(value, field)` applied to every field it covers; the
 * agent's own objects are never modified. */
export function redacted(session: SessionRecord, redact: Redactor): SessionRecord {
  const out = redactFields(session, REDACTED_FIELDS.session, redact);
  out.turns = session.turns.map((original) => {
    const turn = redactFields(original, REDACTED_FIELDS.turn, redact);
    turn.llmCalls = original.llmCalls.map((call) => redactFields(call, REDACTED_FIELDS.llmCall, redact));
    if (original.agentResponse) {
      const response = redactFields(original.agentResponse, REDACTED_FIELDS.agentResponse, redact);
      response.toolCalls = original.agentResponse.toolCalls.map((tool) => redactFields(tool, REDACTED_FIELDS.toolCall, redact));
      turn.agentResponse = response;
    }
    return turn;
  });
  if (session.finalOutcome) out.finalOutcome = redactFields(session.finalOutcome, REDACTED_FIELDS.finalOutcome, redact);
  return out;
}

/** The slow path, taken only when JSON.stringify refuses a session: a bigint becomes its
 * text, an object inside itself becomes "[Circular]"; the rest as JSON.stringify would. */
export function plainJson(value: unknown, path: Set<object> = new Set()): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value === null || typeof value !== "object") return value;
  if (path.has(value)) return CIRCULAR;
  const withToJson = value as { toJSON?: (key: string) => unknown };
  if (typeof withToJson.toJSON === "function") return plainJson(withToJson.toJSON(""), path);
  path.add(value);
  try {
    if (Array.isArray(value)) return value.map((item) => plainJson(item, path));
    const out: Plain = {};
    for (const [key, item] of Object.entries(value)) out[key] = plainJson(item, path);
    return out;
  } finally {
    path.delete(value);
  }
}

/** One session as compact JSON text; throws EncodeError when it cannot be sent. */
export function encodeSession(session: SessionRecord, redact?: Redactor | null): string {
  let value = session;
  if (redact) {
    try {
      value = redacted(session, redact);
    } catch (error) {
      // Never send what the hook could not redact.
      throw new EncodeError(`the redaction hook failed: ${String(error)}`, "redaction_error");
    }
  }
  try {
    return JSON.stringify(value);
  } catch {
    try {
      return JSON.stringify(plainJson(value));
    } catch (error) {
      throw new EncodeError(String(error), "unencodable");
    }
  }
}

/** The request body: the sessions' JSON joined into the ingest envelope. */
export function batchBody(encodedSessions: readonly string[], timestamp: number): string {
  return `{"sessions":[${encodedSessions.join(",")}],"timestamp":${timestamp}}`;
}
