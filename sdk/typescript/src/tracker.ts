/**
 * Recording sessions as they happen: the seed's tracker calls, plus tool-call helpers.
 *
 * Every call here runs on the agent's event loop, so each one builds a small object and
 * nothing else: no encoding, no I/O, and never an exception into the agent's code. A
 * session leaves the tracker when it is completed, or when it is abandoned (not completed
 * within `sessionTimeout`, too many sessions open, or the process exiting): then it is
 * sent with status `abandoned`, because an unfinished session is what an on-call engineer
 * most wants to see.
 */

import { randomUUID } from "node:crypto";

import { defaultLogger, describeError } from "./log.js";
import type {
  AgentResponseInput,
  CompleteSessionInput,
  LlmCallInput,
  LlmCallRecord,
  Logger,
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

export const ABANDONED = "abandoned";
export const DEFAULT_SESSION_TIMEOUT_MS = 30 * 60 * 1000;
export const DEFAULT_MAX_OPEN_SESSIONS = 10_000;

export interface TrackerOptions {
  /** Milliseconds before an open session is sent as abandoned; null: never. */
  sessionTimeout?: number | null;
  /** Past this many open sessions, the oldest is sent as abandoned. */
  maxOpenSessions?: number;
  logger?: Logger;
  /** For tests: the wall clock (epoch ms) and the monotonic clock (ms). */
  now?: () => number;
  monotonic?: () => number;
}

interface OpenSession {
  session: SessionRecord;
  startedAt: number;
}

function toMs(value: TimeInput | null | undefined): number | null {
  if (value === null || value === undefined) return null;
  return value instanceof Date ? value.getTime() : value;
}

function errorText(error: unknown): string | null {
  if (error === null || error === undefined) return null;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return typeof error === "string" ? error : String(error);
}

function isToolCallLike(tool: ToolCallInput | ToolCallLike): tool is ToolCallLike {
  return typeof (tool as ToolCallLike).toToolCall === "function";
}

/** A tool call in the wire format; `toolId` defaults to `<turnId>-tool-<position>`. */
export function toolCallRecord(
  input: ToolCallInput | ToolCallLike,
  turnId: string,
  position: number,
  now: () => number,
): ToolCallRecord {
  const tool = isToolCallLike(input) ? input.toToolCall() : input;
  const start = toMs(tool.startTime);
  const end = toMs(tool.endTime);
  let latency = tool.latencyMs ?? null;
  if (latency === null && start !== null && end !== null) latency = end - start;
  return {
    toolId: tool.toolId ?? `${turnId}-tool-${position}`,
    toolName: tool.toolName,
    arguments: tool.arguments ?? null,
    startTime: start ?? now(),
    endTime: end,
    result: tool.result ?? null,
    error: errorText(tool.error),
    latencyMs: latency,
  };
}

/** The latest time recorded in a session: what an abandoned session's end time is. */
export function lastActivity(session: SessionRecord): number {
  let latest = session.startTime;
  for (const turn of session.turns) {
    latest = Math.max(latest, turn.timestamp || 0);
    for (const call of turn.llmCalls) latest = Math.max(latest, call.endTime || call.startTime || 0);
    for (const tool of turn.agentResponse?.toolCalls ?? []) latest = Math.max(latest, tool.endTime || tool.startTime || 0);
  }
  return latest;
}

/**
 * Times one tool call: `end(result)` or `fail(error)` when it finishes; pass it (or
 * several) in `recordAgentResponse`'s `toolCalls`.
 */
export class ToolCallTimer implements ToolCallLike {
  readonly startTime: number;
  endTime: number | null = null;
  result: unknown = null;
  error: unknown = null;

  constructor(
    readonly toolName: string,
    readonly args: unknown = null,
    readonly toolId?: string,
    private readonly now: () => number = Date.now,
  ) {
    this.startTime = now();
  }

  end(result?: unknown): this {
    this.endTime = this.now();
    if (result !== undefined) this.result = result;
    return this;
  }

  fail(error: unknown): this {
    this.endTime = this.now();
    this.error = error;
    return this;
  }

  toToolCall(): ToolCallInput {
    const call: ToolCallInput = {
      toolName: this.toolName,
      arguments: this.args,
      startTime: this.startTime,
      endTime: this.endTime,
      result: this.result,
      error: this.error,
    };
    if (this.toolId !== undefined) call.toolId = this.toolId;
    return call;
  }
}

/**
 * A turn with its tool calls: `await turn.toolCall(name, args, () => tool(args))` times the
 * call and records its result or error (and rethrows it); `turn.respond(message)` records the
 * agent's response with every tool call timed in the turn.
 */
export class TurnScope {
  readonly toolCalls: ToolCallTimer[] = [];

  constructor(
    private readonly tracker: SessionTracker,
    readonly sessionId: string,
    readonly turnId: string,
  ) {}

  startToolCall(toolName: string, args?: unknown, options: { toolId?: string } = {}): ToolCallTimer {
    const timer = this.tracker.startToolCall(toolName, args, options);
    this.toolCalls.push(timer);
    return timer;
  }

  async toolCall<T>(toolName: string, args: unknown, run: () => T | Promise<T>, options: { toolId?: string } = {}): Promise<T> {
    const timer = this.startToolCall(toolName, args, options);
    try {
      const result = await run();
      timer.end(result);
      return result;
    } catch (error) {
      timer.fail(error);
      throw error;
    }
  }

  respond(message?: unknown, toolCalls: ReadonlyArray<ToolCallInput | ToolCallLike> = []): void {
    this.tracker.recordAgentResponse(this.sessionId, this.turnId, { message, toolCalls: [...this.toolCalls, ...toolCalls] });
  }

  feedback(feedback: unknown): void {
    this.tracker.recordUserFeedback(this.sessionId, this.turnId, feedback);
  }
}

/** Builds sessions in the wire format; finished ones go to the sink (the client's queue). */
export class SessionTracker {
  /** Sessions sent as abandoned so far. */
  abandoned = 0;
  readonly sessionTimeout: number | null;
  readonly maxOpenSessions: number;
  private readonly open = new Map<string, OpenSession>(); // insertion order is start order
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly monotonic: () => number;

  constructor(
    private readonly sink: SessionSink,
    options: TrackerOptions = {},
  ) {
    this.sessionTimeout = options.sessionTimeout === undefined ? DEFAULT_SESSION_TIMEOUT_MS : options.sessionTimeout;
    this.maxOpenSessions = options.maxOpenSessions ?? DEFAULT_MAX_OPEN_SESSIONS;
    this.log = options.logger ?? defaultLogger;
    this.now = options.now ?? Date.now;
    this.monotonic = options.monotonic ?? (() => performance.now());
  }

  get openSessions(): number {
    return this.open.size;
  }

  private session(sessionId: string): SessionRecord {
    const entry = this.open.get(sessionId);
    if (entry === undefined) throw new Error(`unknown or already completed session ${JSON.stringify(sessionId)}`);
    return entry.session;
  }

  private findTurn(session: SessionRecord, turnId: string): TurnRecord {
    for (let i = session.turns.length - 1; i >= 0; i--) {
      const turn = session.turns[i];
      if (turn !== undefined && turn.turnId === turnId) return turn;
    }
    throw new Error(`unknown turn ${JSON.stringify(turnId)} in session ${session.sessionId}`);
  }

  private fault(call: string, error: unknown): void {
    this.log.warn(`bagula: ${call} failed (${describeError(error)}); the session may be incomplete`);
  }

  startSession(agentName: string, initialRequest: unknown, options: StartSessionOptions = {}): string {
    const sessionId = options.sessionId ?? randomUUID();
    try {
      const session: SessionRecord = {
        sessionId,
        agentName,
        userId: options.userId ?? null,
        initialRequest: typeof initialRequest === "string" ? initialRequest : JSON.stringify(initialRequest) ?? "",
        startTime: toMs(options.startTime) ?? this.now(),
        endTime: null,
        metadata: options.metadata ?? null,
        tags: options.tags ? [...options.tags] : null,
        parentSessionId: options.parentSessionId ?? null,
        turns: [],
        finalOutcome: null,
      };
      if (this.open.size >= this.maxOpenSessions) {
        const oldest = this.open.keys().next().value as string;
        const evicted = this.open.get(oldest) as OpenSession;
        this.open.delete(oldest);
        this.log.warn(`bagula: more than ${this.maxOpenSessions} sessions open; sending the oldest, ${oldest}, as abandoned`);
        this.sendAbandoned([evicted.session]);
      }
      this.open.set(sessionId, { session, startedAt: this.monotonic() });
    } catch (error) {
      this.fault("startSession", error);
    }
    return sessionId;
  }

  startTurn(sessionId: string, trigger: unknown, options: StartTurnOptions = {}): string {
    let turnId = options.turnId ?? "turn-unknown";
    try {
      const turns = this.session(sessionId).turns;
      const turnNumber = turns.length + 1;
      turnId = options.turnId ?? `turn-${turnNumber}`;
      turns.push({
        turnId,
        turnNumber,
        timestamp: toMs(options.timestamp) ?? this.now(),
        trigger: trigger ?? null,
        llmCalls: [],
        agentResponse: null,
        userFeedback: null,
      });
    } catch (error) {
      this.fault("startTurn", error);
    }
    return turnId;
  }

  recordLLMCall(sessionId: string, turnId: string, call: LlmCallInput): string | undefined {
    try {
      const calls = this.findTurn(this.session(sessionId), turnId).llmCalls;
      const start = toMs(call.startTime);
      const end = toMs(call.endTime);
      const metrics = call.metrics ?? {};
      const tokensInput = metrics.tokensInput ?? null;
      const tokensOutput = metrics.tokensOutput ?? null;
      let tokensTotal = metrics.tokensTotal ?? null;
      if (tokensTotal === null && tokensInput !== null && tokensOutput !== null) tokensTotal = tokensInput + tokensOutput;
      let latencyMs = metrics.latencyMs ?? null;
      if (latencyMs === null && start !== null && end !== null) latencyMs = end - start;
      const record: LlmCallRecord = {
        callId: call.callId ?? `${turnId}-llm-${calls.length + 1}`,
        provider: call.provider,
        model: call.model,
        startTime: start as number,
        endTime: end,
        messages: call.messages ?? null,
        response: call.response ?? null,
        metrics: { tokensInput, tokensOutput, tokensTotal, costUsd: metrics.costUsd ?? null, latencyMs },
      };
      calls.push(record);
      return record.callId;
    } catch (error) {
      this.fault("recordLLMCall", error);
      return undefined;
    }
  }

  recordAgentResponse(sessionId: string, turnId: string, response: AgentResponseInput = {}): void {
    try {
      const turn = this.findTurn(this.session(sessionId), turnId);
      const toolCalls = (response.toolCalls ?? []).map((tool, i) => toolCallRecord(tool, turnId, i + 1, this.now));
      turn.agentResponse = { message: response.message ?? null, toolCalls };
    } catch (error) {
      this.fault("recordAgentResponse", error);
    }
  }

  recordUserFeedback(sessionId: string, turnId: string, feedback: unknown): void {
    try {
      this.findTurn(this.session(sessionId), turnId).userFeedback = feedback ?? null;
    } catch (error) {
      this.fault("recordUserFeedback", error);
    }
  }

  /** Close the session and queue it for sending. False if it was unknown (never started,
   * already completed, or already sent as abandoned) or dropped. */
  completeSession(sessionId: string, outcome: CompleteSessionInput): boolean {
    try {
      const entry = this.open.get(sessionId);
      if (entry === undefined) {
        this.log.warn(`bagula: completeSession for unknown, completed or abandoned session ${sessionId}`);
        return false;
      }
      this.open.delete(sessionId);
      const session = entry.session;
      const end = toMs(outcome.endTime) ?? this.now();
      session.endTime = end >= session.startTime ? end : session.startTime;
      session.finalOutcome = {
        status: outcome.status,
        result: outcome.result ?? null,
        userSatisfaction: outcome.userSatisfaction ?? null,
        confidence: outcome.confidence ?? null,
      };
      return this.sink.enqueue(session);
    } catch (error) {
      this.fault("completeSession", error);
      return false;
    }
  }

  /** Times a tool call; pass the timer in `recordAgentResponse`'s `toolCalls`. */
  startToolCall(toolName: string, args?: unknown, options: { toolId?: string } = {}): ToolCallTimer {
    return new ToolCallTimer(toolName, args ?? null, options.toolId, this.now);
  }

  /** Starts a turn (as `startTurn`) and returns it as a scope with tool-call helpers. */
  turn(sessionId: string, trigger: unknown, options: StartTurnOptions = {}): TurnScope {
    return new TurnScope(this, sessionId, this.startTurn(sessionId, trigger, options));
  }

  // ------------------------------------------------------------------ abandoned sessions

  private sendAbandoned(sessions: SessionRecord[]): void {
    for (const session of sessions) {
      try {
        session.endTime = lastActivity(session);
      } catch {
        session.endTime = session.startTime; // a malformed time recorded by the agent
      }
      session.finalOutcome = { status: ABANDONED, result: null, userSatisfaction: null, confidence: null };
      this.abandoned += 1;
      this.sink.enqueue(session);
    }
  }

  /** Send every session open for longer than `sessionTimeout` as abandoned; how many. */
  abandonExpired(): number {
    if (this.sessionTimeout === null) return 0;
    const cutoff = this.monotonic() - this.sessionTimeout;
    const expired: SessionRecord[] = [];
    for (const [sessionId, entry] of this.open) {
      if (entry.startedAt > cutoff) break;
      expired.push(entry.session);
      this.open.delete(sessionId);
    }
    if (expired.length > 0) {
      this.log.warn(`bagula: ${expired.length} sessions not completed within ${this.sessionTimeout} ms; sending them as abandoned`);
      this.sendAbandoned(expired);
    }
    return expired.length;
  }

  /** Send every open session as abandoned (the process exiting); how many. */
  abandonAll(): number {
    const sessions = [...this.open.values()].map((entry) => entry.session);
    this.open.clear();
    if (sessions.length > 0) {
      this.log.warn(`bagula: ${sessions.length} sessions still open at exit; sending them as abandoned`);
      this.sendAbandoned(sessions);
    }
    return sessions.length;
  }
}
