/**
 * Redaction at the source: ready redactors for the client's `redact` hook.
 *
 * A redactor is `(value, field) => value`, called before encoding on each of a session's
 * free-text fields and payloads (see `REDACTED_FIELDS`); what it returns is sent instead and
 * the agent's own objects are never modified. The ready ones walk objects and arrays and
 * replace matches inside every string. They are heuristics, pinned by
 * `sdk/testdata/redaction.json`, which the Python client (`bagula_client.redact`) passes too.
 */

import type { Redactor } from "./types.js";

// ASCII classes everywhere (no `u` flag): the same patterns behave alike in Python's re.
const EMAIL = /(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])/g;
const PHONE = new RegExp(
  String.raw`(?<![\w+.-])(?:` +
    String.raw`\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,5}` + // +44 20 7946 0958, +1 (555) 123-4567
    String.raw`|\(\d{3}\) ?\d{3}[ .-]\d{4}` + // (555) 123-4567
    String.raw`|\d{3}[.-]\d{3}[.-]\d{4}` + // 555-123-4567
    String.raw`|0\d{1,4}(?:[ .-]\d{2,4}){2,4}` + // 020 7946 0958, 06 12 34 56 78
    String.raw`)(?!\w|[.-]\d)`,
  "g",
);
const CARD = /(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])/g;
const API_KEY = new RegExp(
  String.raw`\b(?:` +
    String.raw`sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}` +
    String.raw`|(?:AKIA|ASIA)[0-9A-Z]{16}` +
    String.raw`|gh[pousr]_[A-Za-z0-9]{36,}` +
    String.raw`|github_pat_[A-Za-z0-9_]{22,}` +
    String.raw`|xox[abposr]-[A-Za-z0-9-]{10,}` +
    String.raw`|AIza[0-9A-Za-z_-]{35}` +
    String.raw`|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}` +
    String.raw`|bgl_[A-Za-z0-9_-]{20,}` +
    String.raw`|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}` +
    String.raw`)`,
  "g",
);
const BEARER = /\b(Bearer\s+)[A-Za-z0-9._~+/=-]{16,}/gi;
const KEY_VALUE = /\b((?:api[_-]?key|apikey|secret|token|password|passwd|access[_-]?key)["']?\s*[:=]\s*["']?)(?!\[REDACTED)[^\s"',;]{8,}/gi;

export const EMAIL_TOKEN = "[REDACTED:email]";
export const PHONE_TOKEN = "[REDACTED:phone]";
export const CARD_TOKEN = "[REDACTED:card]";
export const API_KEY_TOKEN = "[REDACTED:api_key]";

function luhn(digits: string): boolean {
  let total = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) d = d > 4 ? d * 2 - 9 : d * 2;
    total += d;
  }
  return total % 10 === 0;
}

// Cheap exact prefilters before the regular expressions (most strings hold nothing to redact):
// a phone number has at least 7 digits, a card 13; the shortest key-like match is 14 characters.
const MIN_PHONE_DIGITS = 7;
const MIN_CARD_DIGITS = 13;
const MIN_KEY_LENGTH = 14;

function digits(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code >= 48 && code <= 57) count++;
  }
  return count;
}

function emailsIn(text: string): string {
  return text.includes("@") ? text.replace(EMAIL, EMAIL_TOKEN) : text;
}

function phonesIn(text: string): string {
  if (digits(text) < MIN_PHONE_DIGITS) return text;
  return text.replace(PHONE, (match) => {
    const digits = match.replace(/\D/g, "").length;
    return digits >= 7 && digits <= 15 ? PHONE_TOKEN : match;
  });
}

function cardsIn(text: string): string {
  if (digits(text) < MIN_CARD_DIGITS) return text;
  return text.replace(CARD, (match) => {
    const digits = match.replace(/[ -]/g, "");
    const first = digits[0] ?? "0";
    return digits.length >= 13 && digits.length <= 19 && first >= "2" && first <= "6" && luhn(digits) ? CARD_TOKEN : match;
  });
}

function apiKeysIn(text: string): string {
  if (text.length < MIN_KEY_LENGTH) return text;
  return text
    .replace(API_KEY, API_KEY_TOKEN)
    .replace(BEARER, (_match, prefix: string) => prefix + API_KEY_TOKEN)
    .replace(KEY_VALUE, (_match, prefix: string) => prefix + API_KEY_TOKEN);
}

/** A redactor from a function over text: applied to every string inside the value (objects
 * and arrays walked, keys kept, `toJSON` honoured as JSON.stringify would); an object inside
 * itself becomes "[Circular]". */
export function strings(replace: (text: string) => string): Redactor {
  const walk = (value: unknown, path: Set<object>): unknown => {
    if (typeof value === "string") return replace(value);
    if (typeof value === "bigint") return replace(value.toString());
    if (value === null || typeof value !== "object") return value;
    if (path.has(value)) return "[Circular]";
    const withToJson = value as { toJSON?: (key: string) => unknown };
    if (typeof withToJson.toJSON === "function") return walk(withToJson.toJSON(""), path);
    path.add(value);
    try {
      if (Array.isArray(value)) return value.map((item) => walk(item, path));
      const out: Record<string, unknown> = {};
      for (const [key, item] of Object.entries(value)) out[key] = walk(item, path);
      return out;
    } finally {
      path.delete(value);
    }
  };
  return (value) => walk(value, new Set());
}

/** Apply several redactors in turn. */
export function compose(...redactors: Redactor[]): Redactor {
  return (value, field) => redactors.reduce((current, redact) => redact(current, field), value);
}

/**
 * The ready redactors:
 * - `emails`: `[REDACTED:email]`
 * - `phoneNumbers`: `[REDACTED:phone]`: with a `+` country code (8 to 15 digits), North
 *   American `(555) 123-4567` / `555-123-4567` / `555.123.4567`, and national numbers starting
 *   with 0 in groups (`020 7946 0958`); plain digit runs, dates and versions are left alone
 * - `cardNumbers`: `[REDACTED:card]`: 13 to 19 digits (spaces or dashes allowed) passing the
 *   Luhn check and starting like a card (2-6)
 * - `apiKeys`: `[REDACTED:api_key]`: OpenAI/Anthropic `sk-...`, AWS, GitHub, Slack, Google,
 *   Stripe and Bagula keys, JWTs, `Bearer` tokens, values of `api_key=`/`token:`/`password=`
 * - `pii`: all four in one walk (keys first: they can hold digits and @)
 */
export const redactors = {
  emails: strings(emailsIn),
  phoneNumbers: strings(phonesIn),
  cardNumbers: strings(cardsIn),
  apiKeys: strings(apiKeysIn),
  pii: strings((text) => phonesIn(cardsIn(emailsIn(apiKeysIn(text))))),
  strings,
  compose,
};
