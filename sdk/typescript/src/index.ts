/**
 * `@bagula/client`: instrument an AI agent; its finished sessions reach Bagula in gzip
 * batches sent in the background, without slowing or breaking the agent.
 */

export { BagulaClient, DEFAULT_ENDPOINT } from "./client.js";
export type { BagulaClientOptions, ClientStats } from "./client.js";
export { SessionTracker, ToolCallTimer, TurnScope, ABANDONED } from "./tracker.js";
export type { TrackerOptions } from "./tracker.js";
export { redactors, strings, compose, EMAIL_TOKEN, PHONE_TOKEN, CARD_TOKEN, API_KEY_TOKEN } from "./redact.js";
export { REDACTED_FIELDS } from "./wire.js";
export { VERSION } from "./version.js";
export type {
  AgentResponseInput,
  AgentResponseRecord,
  CompleteSessionInput,
  FinalOutcome,
  LlmCallInput,
  LlmCallRecord,
  LlmMetrics,
  Logger,
  Redactor,
  SessionRecord,
  SessionSink,
  StartSessionOptions,
  StartTurnOptions,
  TimeInput,
  ToolCallInput,
  ToolCallLike,
  ToolCallRecord,
  TurnRecord,
} from "./types.js";
