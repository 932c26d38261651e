/**
 * One HTTP POST of a gzip batch over a kept-alive connection, with Node's own `http`/`https`.
 *
 * Not `fetch`: a request in flight must not keep a finishing process alive (the socket is
 * unref'd, so the process can reach `beforeExit`, where the client flushes within
 * `shutdownTimeout`), and `fetch` offers no way to unref its socket.
 */

import * as http from "node:http";
import * as https from "node:https";

import { VERSION } from "./version.js";

export const INGEST_PATH = "/v1/sessions/ingest";

export interface Reply {
  /** null when no answer came (network error, timeout). */
  status: number | null;
  body: unknown;
  /** Seconds, from Retry-After. */
  retryAfter: number | null;
  error: string | null;
}

/** Retry-After as seconds: a number, or an HTTP date. */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | null {
  if (!value) return null;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text);
  const when = Date.parse(text);
  return Number.isNaN(when) ? null : Math.max(0, (when - now) / 1000);
}

export class HttpTransport {
  private readonly url: URL;
  private readonly agent: http.Agent;
  private readonly headers: Record<string, string>;
  private current: http.ClientRequest | null = null;

  constructor(endpoint: string, apiKey: string, private readonly timeoutMs: number) {
    const base = new URL(endpoint);
    if (base.protocol !== "http:" && base.protocol !== "https:") throw new Error(`endpoint must be an http(s) URL, got ${endpoint}`);
    this.url = new URL(base.pathname.replace(/\/+$/, "") + INGEST_PATH, base);
    const Agent = base.protocol === "https:" ? https.Agent : http.Agent;
    this.agent = new Agent({ keepAlive: true, maxSockets: 1 });
    this.headers = {
      Authorization: `Bearer ${apiKey}`,
      "Content-Type": "application/json",
      "Content-Encoding": "gzip",
      "User-Agent": `bagula-client-typescript/${VERSION} node/${process.versions.node}`,
    };
  }

  /** End the request in flight, if any (the shutdown deadline came). */
  abort(): void {
    this.current?.destroy(new Error("aborted at the shutdown deadline"));
  }

  close(): void {
    this.abort();
    this.agent.destroy();
  }

  post(gzippedBody: Buffer): Promise<Reply> {
    return new Promise((resolve) => {
      let settled = false;
      const finish = (reply: Reply): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.current = null;
        resolve(reply);
      };
      const send = this.url.protocol === "https:" ? https.request : http.request;
      const request = send(this.url, {
        method: "POST",
        agent: this.agent,
        headers: { ...this.headers, "Content-Length": String(gzippedBody.length) },
      });
      this.current = request;
      // The whole exchange, not just the socket's idleness, is bounded by the timeout.
      const timer = setTimeout(() => request.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      timer.unref();
      request.on("socket", (socket) => socket.unref());
      request.on("error", (error) => finish({ status: null, body: null, retryAfter: null, error: `${error.name}: ${error.message}` }));
      request.on("response", (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", (error) => finish({ status: null, body: null, retryAfter: null, error: `${error.name}: ${error.message}` }));
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = null;
          try {
            body = text ? JSON.parse(text) : null;
          } catch {
            body = text.slice(0, 500);
          }
          const retryAfter = parseRetryAfter(response.headers["retry-after"]);
          finish({ status: response.statusCode ?? null, body, retryAfter, error: null });
        });
      });
      request.end(gzippedBody);
    });
  }
}
