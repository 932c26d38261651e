/**
 * The wire format (what POST /v1/sessions/ingest takes, camelCase, times in epoch
 * milliseconds) and what the tracker calls accept.
 */

/** Epoch milliseconds, or a Date. */
export type TimeInput = number | Date;

export interface LlmMetrics {
  tokensInput: number | null;
  tokensOutput: number | null;
  tokensTotal: number | null;
  costUsd: number | null;
  latencyMs: number | null;
}

export interface ToolCallRecord {
  toolId: string;
  toolName: string;
  arguments: unknown;
  startTime: number;
  endTime: number | null;
  result: unknown;
  error: string | null;
  latencyMs: number | null;
}

export interface LlmCallRecord {
  callId: string;
  provider: string;
  model: string;
  startTime: number;
  endTime: number | null;
  messages: unknown;
  response: unknown;
  metrics: LlmMetrics;
}

export interface AgentResponseRecord {
  message: unknown;
  toolCalls: ToolCallRecord[];
}

export interface TurnRecord {
  turnId: string;
  turnNumber: number;
  timestamp: number;
  trigger: unknown;
  llmCalls: LlmCallRecord[];
  agentResponse: AgentResponseRecord | null;
  userFeedback: unknown;
}

export interface FinalOutcome {
  status: string;
  result: unknown;
  userSatisfaction: number | null;
  confidence: number | null;
}

/** One session as it is sent. */
export interface SessionRecord {
  sessionId: string;
  agentName: string;
  userId: string | null;
  initialRequest: string;
  startTime: number;
  endTime: number | null;
  metadata: Record<string, unknown> | null;
  tags: string[] | null;
  parentSessionId: string | null;
  turns: TurnRecord[];
  finalOutcome: FinalOutcome | null;
}

export interface StartSessionOptions {
  userId?: string | null;
  metadata?: Record<string, unknown> | null;
  /** The session that spawned this one (multi-agent pipelines). */
  parentSessionId?: string | null;
  tags?: readonly string[] | null;
  /** A UUID of your own; a random one by default. */
  sessionId?: string;
  /** Default: now. */
  startTime?: TimeInput;
}

export interface StartTurnOptions {
  /** Default: `turn-<number>`. */
  turnId?: string;
  /** Default: now. */
  timestamp?: TimeInput;
}

export interface LlmCallInput {
  /** Default: `<turnId>-llm-<number>`. */
  callId?: string;
  provider: string;
  model: string;
  startTime: TimeInput;
  endTime?: TimeInput | null;
  messages?: unknown;
  response?: unknown;
  /** `tokensTotal` and `latencyMs` are derived when left out. */
  metrics?: Partial<LlmMetrics> | null;
}

export interface ToolCallInput {
  /** Default: `<turnId>-tool-<position>`. */
  toolId?: string;
  toolName: string;
  arguments?: unknown;
  /** Default: when the response is recorded. */
  startTime?: TimeInput;
  endTime?: TimeInput | null;
  result?: unknown;
  /** An Error becomes `"<name>: <message>"`. */
  error?: unknown;
  /** Derived from the times when left out. */
  latencyMs?: number | null;
}

/** Anything `recordAgentResponse` takes as a tool call: plain input or a timer's record. */
export interface ToolCallLike {
  toToolCall(): ToolCallInput;
}

export interface AgentResponseInput {
  message?: unknown;
  toolCalls?: ReadonlyArray<ToolCallInput | ToolCallLike> | null;
}

export interface CompleteSessionInput {
  status: string;
  result?: unknown;
  /** 1 to 5. */
  userSatisfaction?: number | null;
  /** 0 to 1. */
  confidence?: number | null;
  /** Default: now. */
  endTime?: TimeInput;
}

/** Where finished sessions go: the client's queue (or a sink of your own). */
export interface SessionSink {
  enqueue(session: SessionRecord): boolean;
}

/**
 * A redaction hook: called on each payload of a session (see `REDACTED_FIELDS`) before it is
 * encoded; what it returns is sent instead. `field` is the wire name of the field.
 */
export type Redactor = (value: unknown, field: string) => unknown;

export interface Logger {
  debug?(message: string): void;
  info?(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}
