import type { Logger } from "./types.js";

/** Warnings and errors on the console, prefixed; nothing below. Pass `logger` to route them. */
export const defaultLogger: Logger = {
  warn: (message) => console.warn(message),
  error: (message) => console.error(message),
};

export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
