/**
 * The client: an in-memory queue of finished sessions, sent in gzip batches by one sender
 * loop on the event loop, with the same delivery policy as the Python client:
 *
 * - A batch goes out when `batchSize` sessions are queued, the oldest has waited
 *   `flushInterval` ms, or `flush()`/`shutdown()` asks. Each session is redacted and encoded
 *   on its own; one that cannot be is dropped alone (`unencodable`, `redaction_error`).
 * - Unavailable (no answer, 408, 429, 502, 503, 504): the same batch is retried with
 *   exponential backoff and jitter (or after `Retry-After`) until delivered: an outage loses
 *   nothing; memory is bounded by the queue (`queue_full`), exit by `shutdownTimeout`.
 * - Server error (500 and the other 5xx): after `serverErrorAttempts` tries the batch is
 *   split in two and both halves go to the back of the queue, behind every session queued by
 *   then; a single session that still fails is dropped (`server_error`), its id logged.
 * - 413: split in two, both halves sent at once; a single session too large is dropped
 *   (`client_error`). Other 4xx: dropped at once (`client_error`). 207 and 422 with
 *   `rejected`: the stored sessions are done, the rejected logged and counted (`rejected`).
 * - `maxAttempts` (unlimited by default) caps the tries of any batch (`retries_exhausted`).
 * - The backoff grows with the failures in a row, whichever batch they were on.
 *
 * Nothing the client does keeps the process alive by itself (timers and sockets are
 * unref'd); when the process would exit (`beforeExit`), on SIGTERM and SIGINT, open sessions
 * are sent as abandoned and everything is flushed, waiting at most `shutdownTimeout` ms.
 */

import { gzip } from "node:zlib";

import { defaultLogger, describeError } from "./log.js";
import { DEFAULT_MAX_OPEN_SESSIONS, DEFAULT_SESSION_TIMEOUT_MS, SessionTracker } from "./tracker.js";
import { HttpTransport, type Reply } from "./transport.js";
import type { Logger, Redactor, SessionRecord, SessionSink } from "./types.js";
import { EncodeError, batchBody, encodeSession } from "./wire.js";

export const DEFAULT_ENDPOINT = "http://localhost:8000";
const UNAVAILABLE = new Set([408, 429, 502, 503, 504]);

export interface BagulaClientOptions {
  /** Default: `BAGULA_API_KEY`. Without a key, sessions are counted as dropped (`disabled`). */
  apiKey?: string | undefined;
  /** Default: `BAGULA_ENDPOINT`, else http://localhost:8000. */
  endpoint?: string | undefined;
  /** Sessions per request (50). */
  batchSize?: number;
  /** Longest wait of a queued session before its batch goes out, ms (10,000). */
  flushInterval?: number;
  /** Sessions held at most; past it new ones are dropped (`queue_full`) (10,000). */
  maxQueueSize?: number;
  /** One request's limit, ms (10,000). */
  requestTimeout?: number;
  /** What the flush at exit may take, ms (5,000). */
  shutdownTimeout?: number;
  /** First retry delay, ms (500); doubles per failure in a row, with jitter. */
  initialBackoff?: number;
  /** Largest retry delay, ms (30,000). */
  maxBackoff?: number;
  /** Tries of one batch before it is dropped (`retries_exhausted`); null: unlimited (default). */
  maxAttempts?: number | null;
  /** Tries of one batch on server errors before it is split and sent to the back (3). */
  serverErrorAttempts?: number;
  /** An open session is sent as abandoned after this many ms (30 minutes); null: never. */
  sessionTimeout?: number | null;
  /** Past this many open sessions the oldest is sent as abandoned (10,000). */
  maxOpenSessions?: number;
  /** Applied to every payload before it leaves the process (see `redactors`). */
  redact?: Redactor | null;
  /** Where warnings and errors go (default: the console); null: nowhere. */
  logger?: Logger | null;
  /** Flush on `beforeExit`, SIGTERM and SIGINT (true). */
  flushAtExit?: boolean;
}

export interface ClientStats {
  /** Sessions the API acknowledged as stored (or already stored). */
  sent: number;
  duplicates: number;
  rejected: number;
  retried: number;
  batches: number;
  /** Sessions sent as abandoned. */
  abandoned: number;
  /** Sessions lost, by reason. */
  dropped: Record<string, number>;
  /** Accepted and not yet acknowledged (queued, at the back, in flight). */
  queued: number;
  /** Sessions started and not yet completed. */
  open: number;
}

interface Queued {
  seq: number;
  at: number;
  session: SessionRecord;
}

class Batch {
  attempts = 0;
  serverErrors = 0;
  body: Buffer | null = null;
  /** Sequence number of the last session queued when it went to the back of the queue. */
  after = -1;

  constructor(
    readonly sessions: string[],
    readonly ids: string[],
    /** Sessions are counted once: a batch from before a discard settles nothing. */
    readonly epoch: number,
  ) {}

  get size(): number {
    return this.sessions.length;
  }

  halves(): [Batch, Batch] {
    const middle = Math.floor(this.sessions.length / 2);
    return [
      new Batch(this.sessions.slice(0, middle), this.ids.slice(0, middle), this.epoch),
      new Batch(this.sessions.slice(middle), this.ids.slice(middle), this.epoch),
    ];
  }
}

const silent: Logger = { warn: () => undefined, error: () => undefined };

function gzipAsync(text: string): Promise<Buffer> {
  return new Promise((resolve, reject) => gzip(text, { level: 6 }, (error, out) => (error ? reject(error) : resolve(out))));
}

function positive(name: string, value: number, min: number): number {
  if (!Number.isFinite(value) || value < min) throw new RangeError(`${name} must be a number >= ${min}, got ${value}`);
  return value;
}

/**
 * Collects finished sessions and sends them in gzip batches in the background. Recording
 * never blocks, slows or throws into the agent's code.
 */
export class BagulaClient implements SessionSink {
  readonly apiKey: string | undefined;
  readonly endpoint: string;
  readonly batchSize: number;
  readonly flushInterval: number;
  readonly maxQueueSize: number;
  readonly requestTimeout: number;
  readonly shutdownTimeout: number;
  readonly initialBackoff: number;
  readonly maxBackoff: number;
  readonly maxAttempts: number | null;
  readonly serverErrorAttempts: number;
  readonly sessionTimeout: number | null;
  readonly maxOpenSessions: number;
  readonly redact: Redactor | null;
  readonly enabled: boolean;

  private readonly log: Logger;
  private tracker: SessionTracker | null = null;
  private transport: HttpTransport | null = null;
  // The queue is an array read from `head`, compacted now and then: O(1) at both ends.
  private queue: Queued[] = [];
  private head = 0;
  private readonly back: Batch[] = [];
  private seq = 0;
  private epoch = 0;
  private pending = 0;
  private flushRequested = false;
  private closing = false;
  private closed = false;
  private deadline = Infinity;
  private failures = 0;
  private retryAt = 0;
  private pumping = false;
  private pumpScheduled = false;
  private flushTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;
  private readonly waiters = new Set<(delivered: boolean) => void>();
  private readonly counters = { sent: 0, duplicates: 0, rejected: 0, retried: 0, batches: 0 };
  private readonly dropped: Record<string, number> = {};

  constructor(options: BagulaClientOptions = {}) {
    this.apiKey = options.apiKey ?? process.env.BAGULA_API_KEY;
    this.endpoint = options.endpoint ?? process.env.BAGULA_ENDPOINT ?? DEFAULT_ENDPOINT;
    this.batchSize = positive("batchSize", options.batchSize ?? 50, 1);
    this.flushInterval = positive("flushInterval", options.flushInterval ?? 10_000, 1);
    this.maxQueueSize = positive("maxQueueSize", options.maxQueueSize ?? 10_000, 1);
    this.requestTimeout = positive("requestTimeout", options.requestTimeout ?? 10_000, 1);
    this.shutdownTimeout = positive("shutdownTimeout", options.shutdownTimeout ?? 5_000, 0);
    this.initialBackoff = positive("initialBackoff", options.initialBackoff ?? 500, 0);
    this.maxBackoff = positive("maxBackoff", options.maxBackoff ?? 30_000, 0);
    this.maxAttempts = options.maxAttempts ?? null;
    this.serverErrorAttempts = positive("serverErrorAttempts", options.serverErrorAttempts ?? 3, 1);
    this.sessionTimeout = options.sessionTimeout === undefined ? DEFAULT_SESSION_TIMEOUT_MS : options.sessionTimeout;
    if (this.sessionTimeout !== null) positive("sessionTimeout", this.sessionTimeout, 1);
    this.maxOpenSessions = positive("maxOpenSessions", options.maxOpenSessions ?? DEFAULT_MAX_OPEN_SESSIONS, 1);
    this.redact = options.redact ?? null;
    this.log = options.logger === null ? silent : (options.logger ?? defaultLogger);
    let endpointOk = true;
    try {
      const protocol = new URL(this.endpoint).protocol;
      endpointOk = protocol === "http:" || protocol === "https:";
    } catch {
      endpointOk = false;
    }
    this.enabled = Boolean(this.apiKey) && endpointOk;
    if (!this.apiKey) this.log.error("bagula: no API key (pass apiKey or set BAGULA_API_KEY); sessions will be dropped");
    if (!endpointOk) this.log.error(`bagula: endpoint ${JSON.stringify(this.endpoint)} is not an http(s) URL; sessions will be dropped`);
    if (options.flushAtExit ?? true) registerForExit(this);
  }

  getSessionTracker(): SessionTracker {
    if (this.tracker === null) {
      this.tracker = new SessionTracker(this, {
        sessionTimeout: this.sessionTimeout,
        maxOpenSessions: this.maxOpenSessions,
        logger: this.log,
      });
      if (this.sessionTimeout !== null) {
        const every = Math.min(60_000, Math.max(50, this.sessionTimeout / 4));
        this.sweepTimer = setInterval(() => this.sweep(), every);
        this.sweepTimer.unref();
      }
    }
    return this.tracker;
  }

  stats(): ClientStats {
    return {
      ...this.counters,
      abandoned: this.tracker?.abandoned ?? 0,
      dropped: { ...this.dropped },
      queued: this.pending,
      open: this.tracker?.openSessions ?? 0,
    };
  }

  /** Queue one finished session (wire format). Never waits on the network; false if dropped. */
  enqueue(session: SessionRecord): boolean {
    if (!this.enabled) return this.drop("disabled", 1);
    if (this.closing) return this.drop("closed", 1);
    const queued = this.queue.length - this.head;
    if (queued >= this.maxQueueSize) {
      const full = (this.dropped.queue_full ?? 0) + 1;
      if (full === 1 || full % 1000 === 0) this.log.warn(`bagula: queue full (${this.maxQueueSize} sessions); dropping`);
      return this.drop("queue_full", 1);
    }
    this.seq += 1;
    this.queue.push({ seq: this.seq, at: performance.now(), session });
    this.pending += 1;
    if (queued + 1 >= this.batchSize) this.schedulePump();
    else if (this.flushTimer === null) this.armFlushTimer();
    return true;
  }

  /**
   * Send everything queued now (and the sessions past `sessionTimeout`); resolves true once
   * the API has acknowledged it all, false if `timeoutMs` passed first (they stay queued).
   */
  flush(timeoutMs = 30_000): Promise<boolean> {
    this.sweep();
    if (this.pending === 0) return Promise.resolve(true);
    this.flushRequested = true;
    this.schedulePump();
    return this.settled(timeoutMs);
  }

  /**
   * Send open sessions as abandoned, flush, and stop; waits at most `timeoutMs` (default
   * `shutdownTimeout`). What is still undelivered then is dropped (`shutdown`); resolves
   * false when anything was.
   */
  async shutdown(timeoutMs: number = this.shutdownTimeout): Promise<boolean> {
    if (!this.closing) {
      this.tracker?.abandonAll();
      this.closing = true;
      unregisterForExit(this);
      if (this.sweepTimer) clearInterval(this.sweepTimer);
    }
    this.deadline = Math.min(this.deadline, performance.now() + timeoutMs);
    this.schedulePump();
    this.wake?.();
    await this.settled(Math.max(0, this.deadline - performance.now()));
    this.transport?.abort();
    this.closeOut();
    return (this.dropped.shutdown ?? 0) === 0;
  }

  // ------------------------------------------------------------------ internals

  /** @internal At the process's end: abandoned sessions out, everything flushed within the
   * shutdown timeout, what is left counted; the client stays usable. */
  async drainAtExit(): Promise<void> {
    if (this.closing) return;
    this.tracker?.abandonAll();
    if (this.pending === 0) return;
    this.flushRequested = true;
    this.schedulePump();
    const delivered = await this.settled(this.shutdownTimeout);
    if (!delivered && this.pending > 0) {
      // Nothing more will happen in this process: count what is lost, so the next
      // beforeExit does not try again for ever.
      this.transport?.abort();
      this.log.warn(`bagula: shutdown timeout; ${this.pending} sessions not delivered`);
      this.discardAll("shutdown");
    }
  }

  /** @internal process.exit() came before the flush: nothing asynchronous can run any more. */
  reportAtExit(): void {
    if (this.pending > 0) {
      this.log.warn(`bagula: the process exited with ${this.pending} sessions not delivered (await client.shutdown() before process.exit())`);
    }
  }

  /** @internal */
  hasWork(): boolean {
    return this.pending > 0 || (this.tracker?.openSessions ?? 0) > 0;
  }

  private closeOut(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.pending > 0) {
      this.log.warn(`bagula: shutdown timeout; ${this.pending} sessions not delivered`);
      this.discardAll("shutdown");
    }
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.transport?.close();
  }

  private discardAll(reason: string): void {
    this.drop(reason, this.pending);
    this.queue = [];
    this.head = 0;
    this.back.length = 0;
    this.pending = 0;
    this.epoch += 1; // a batch still in flight was counted here, not when it ends
    this.notifySettled(false); // a flush still waiting did not see its sessions delivered
  }

  private drop(reason: string, n: number): false {
    if (n > 0) this.dropped[reason] = (this.dropped[reason] ?? 0) + n;
    return false;
  }

  /** Sessions leave the client (delivered, rejected or dropped): what flush waits for. */
  private settle(batch: Batch | null, n: number, dropped?: string): void {
    if (batch !== null && batch.epoch !== this.epoch) return; // already counted by a discard
    if (dropped) this.drop(dropped, n);
    this.pending -= n;
    this.notifySettled();
  }

  private notifySettled(delivered = true): void {
    if (this.pending === 0) for (const waiter of [...this.waiters]) waiter(delivered);
  }

  /** Resolves true when nothing is pending, false after `timeoutMs`. The timer is ref'd: a
   * caller awaiting a flush keeps the process alive until it is done (or times out). */
  private settled(timeoutMs: number): Promise<boolean> {
    if (this.pending === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (result: boolean): void => {
        clearTimeout(timer);
        this.waiters.delete(onSettled);
        resolve(result);
      };
      const onSettled = (delivered: boolean): void => done(delivered);
      const timer = setTimeout(() => done(this.pending === 0), timeoutMs);
      this.waiters.add(onSettled);
    });
  }

  private sweep(): void {
    try {
      this.tracker?.abandonExpired();
    } catch (error) {
      this.log.error(`bagula: sweeping abandoned sessions failed: ${describeError(error)}`);
    }
  }

  private armFlushTimer(): void {
    const oldest = this.queue[this.head];
    if (oldest === undefined || this.flushTimer !== null) return;
    const due = Math.max(0, oldest.at + this.flushInterval - performance.now());
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.schedulePump();
    }, due);
    this.flushTimer.unref();
  }

  /** The sender runs after the current call returns: never inside the agent's call. */
  private schedulePump(): void {
    if (this.pumpScheduled || this.pumping) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      void this.pump();
    }).unref();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        const batch = this.nextBatch();
        if (batch === null) break;
        try {
          await this.send(batch);
        } catch (error) {
          // The sender must survive anything; what it was sending is counted, not left pending.
          this.log.error(`bagula: unexpected error in the sender: ${describeError(error)}; dropping ${batch.size} sessions`);
          this.settle(batch, batch.size, "internal_error");
        }
        if (this.closing && performance.now() >= this.deadline) break;
      }
    } catch (error) {
      this.log.error(`bagula: unexpected error in the sender: ${describeError(error)}`);
    } finally {
      this.pumping = false;
      if (this.pending === 0) this.flushRequested = false;
      if (!this.closed) this.armFlushTimer();
    }
  }

  private nextBatch(): Batch | null {
    const front = this.queue[this.head];
    const waiting = this.back[0];
    if (waiting !== undefined && (front === undefined || front.seq > waiting.after)) return this.back.shift() ?? null;
    if (front === undefined) return null;
    const queued = this.queue.length - this.head;
    const due = front.at + this.flushInterval <= performance.now();
    if (queued < this.batchSize && !this.flushRequested && !this.closing && !due) return null;
    const taken = this.queue.slice(this.head, this.head + this.batchSize);
    this.head += taken.length;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (this.flushTimer !== null && this.head === this.queue.length) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    return this.encode(taken.map((item) => item.session));
  }

  /** Each session on its own: one that cannot be encoded is dropped alone. */
  private encode(sessions: SessionRecord[]): Batch | null {
    const encoded: string[] = [];
    const ids: string[] = [];
    for (const session of sessions) {
      try {
        encoded.push(encodeSession(session, this.redact));
        ids.push(session.sessionId);
      } catch (error) {
        const reason = error instanceof EncodeError ? error.reason : "unencodable";
        this.log.error(`bagula: session ${session.sessionId} cannot be sent (${describeError(error)}); dropping it`);
        this.settle(null, 1, reason);
      }
    }
    return encoded.length > 0 ? new Batch(encoded, ids, this.epoch) : null;
  }

  private backoff(failures: number): number {
    const base = Math.min(this.maxBackoff, this.initialBackoff * 2 ** (failures - 1));
    return base * (0.5 + Math.random() * 0.5);
  }

  /** Sleep until the backoff is over; false when shutting down and the deadline came first. */
  private async waitToRetry(): Promise<boolean> {
    for (;;) {
      const now = performance.now();
      const until = this.closing ? Math.min(this.retryAt, this.deadline) : this.retryAt;
      if (now >= until) return !(this.closing && now >= this.deadline);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.wake = null;
          resolve();
        }, until - now);
        timer.unref();
        this.wake = () => {
          clearTimeout(timer);
          this.wake = null;
          resolve();
        };
      });
    }
  }

  private toTheBack(...batches: Batch[]): void {
    for (const batch of batches) {
      if (batch.epoch !== this.epoch) continue;
      batch.after = this.seq;
      this.back.push(batch);
    }
  }

  private async send(batch: Batch): Promise<void> {
    this.transport ??= new HttpTransport(this.endpoint, this.apiKey ?? "", this.requestTimeout);
    for (;;) {
      if (!(await this.waitToRetry())) {
        this.settle(batch, batch.size, "shutdown");
        return;
      }
      if (batch.body === null) {
        try {
          batch.body = await gzipAsync(batchBody(batch.sessions, Date.now()));
        } catch (error) {
          this.log.error(`bagula: compressing a batch failed (${describeError(error)}); dropping ${batch.size} sessions`);
          this.settle(batch, batch.size, "internal_error");
          return;
        }
      }
      const reply = await this.transport.post(batch.body);
      const status = reply.status;
      if (status !== null && (status < 300 || (status === 422 && hasRejections(reply)))) {
        this.acknowledge(reply, batch);
        return;
      }
      if (status === 413 && batch.size > 1) {
        for (const half of batch.halves()) await this.send(half);
        return;
      }
      if (status !== null && !UNAVAILABLE.has(status) && status < 500) {
        this.log.error(`bagula: API refused a batch of ${batch.size} sessions (${status}): ${JSON.stringify(reply.body)}; dropping it`);
        this.settle(batch, batch.size, "client_error");
        return;
      }
      batch.attempts += 1;
      this.failures += 1;
      const delay = reply.retryAfter !== null ? reply.retryAfter * 1000 : this.backoff(this.failures);
      this.retryAt = performance.now() + Math.min(delay, this.maxBackoff * 4);
      const what = reply.error ?? String(status);
      if (this.maxAttempts !== null && batch.attempts >= this.maxAttempts) {
        this.log.error(`bagula: giving up on a batch of ${batch.size} sessions after ${batch.attempts} attempts (${what})`);
        this.settle(batch, batch.size, "retries_exhausted");
        return;
      }
      if (status !== null && status >= 500 && !UNAVAILABLE.has(status)) {
        batch.serverErrors += 1;
        if (batch.serverErrors >= this.serverErrorAttempts) {
          if (batch.size === 1) {
            this.log.error(`bagula: the API failed on session ${batch.ids[0]} ${batch.serverErrors} times (${status}): ${JSON.stringify(reply.body)}; dropping it`);
            this.settle(batch, 1, "server_error");
            return;
          }
          this.log.warn(`bagula: the API failed on a batch of ${batch.size} sessions ${batch.serverErrors} times (${status}); splitting it and moving it behind newer sessions`);
          this.counters.retried += 1;
          this.toTheBack(...batch.halves());
          return;
        }
      }
      this.log.info?.(`bagula: send failed (${what}); retry ${batch.attempts}`);
      this.counters.retried += 1;
    }
  }

  private acknowledge(reply: Reply, batch: Batch): void {
    this.failures = 0;
    this.retryAt = 0;
    const body = (reply.body !== null && typeof reply.body === "object" ? reply.body : {}) as {
      duplicates?: number;
      rejected?: Array<{ sessionId?: unknown; errors?: unknown }>;
    };
    const rejected = Array.isArray(body.rejected) ? body.rejected : [];
    for (const item of rejected) {
      this.log.warn(`bagula: API rejected session ${String(item.sessionId)}: ${JSON.stringify(item.errors)}`);
    }
    if (batch.epoch !== this.epoch) return; // already counted by a discard
    this.counters.batches += 1;
    this.counters.sent += batch.size - rejected.length;
    this.counters.duplicates += Number(body.duplicates ?? 0);
    this.counters.rejected += rejected.length;
    this.settle(batch, batch.size);
  }
}

function hasRejections(reply: Reply): boolean {
  return reply.body !== null && typeof reply.body === "object" && Array.isArray((reply.body as { rejected?: unknown }).rejected);
}

// ------------------------------------------------------------------ flush at exit

const liveClients = new Set<BagulaClient>();
let hooksInstalled = false;

function registerForExit(client: BagulaClient): void {
  liveClients.add(client);
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("beforeExit", onBeforeExit);
  process.on("exit", onExit);
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, onSignal);
}

function unregisterForExit(client: BagulaClient): void {
  liveClients.delete(client);
}

let draining = false;

/** The event loop is empty: nothing the application does will complete an open session or
 * send a batch, so do it now. The flush keeps the process alive until it is done. */
function onBeforeExit(): void {
  if (draining) return;
  const clients = [...liveClients].filter((client) => client.hasWork());
  if (clients.length === 0) return;
  draining = true;
  void Promise.allSettled(clients.map((client) => client.drainAtExit())).finally(() => {
    draining = false;
  });
}

function onExit(): void {
  for (const client of liveClients) client.reportAtExit();
}

/** SIGTERM/SIGINT: if no one else listens for the signal, send open sessions as abandoned,
 * flush (bounded by each client's shutdownTimeout) and end the process by the signal, as Node
 * would have at once. An application with handlers of its own decides when to exit: the
 * queue is flushed now (its sessions still open may yet complete), and its normal exit
 * flushes the rest at beforeExit. */
function onSignal(signal: NodeJS.Signals): void {
  const ownersOfTheSignal = process.listeners(signal).filter((listener) => listener !== onSignal);
  process.removeListener(signal, onSignal); // a second signal acts at once
  const clients = [...liveClients];
  if (ownersOfTheSignal.length > 0) {
    for (const client of clients) void client.flush(client.shutdownTimeout);
    return;
  }
  void Promise.allSettled(clients.map((client) => client.shutdown())).finally(() => {
    process.kill(process.pid, signal);
  });
}
