// What a tool answers: text for the model, the same facts as structured content for programs, and
// failures as results with isError carrying cordon's error code and the message that says what to do.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { CordonError } from '../errors/registry.js';

export function jsonResult(value: unknown, lead?: string): CallToolResult {
  const text = JSON.stringify(value, null, 2);
  return {
    content: [{ type: 'text', text: lead ? `${lead}\n${text}` : text }],
    ...(value && typeof value === 'object' && !Array.isArray(value) ? { structuredContent: value as Record<string, unknown> } : { structuredContent: { items: value } }),
  };
}

/** Any failure as a tool result: a CordonError keeps its code; anything else is `internal`. */
export function errorResult(e: unknown): CallToolResult {
  const err = e instanceof CordonError ? e : new CordonError('internal', `internal error: ${(e as Error)?.message ?? String(e)}; retry, and report it if it persists`);
  return {
    isError: true,
    content: [{ type: 'text', text: `error ${err.code}: ${err.message}` }],
    structuredContent: { error: err.toJSON() },
  };
}

/** Run a tool body; whatever it throws becomes an isError result instead of a protocol error. */
export function guarded<A>(fn: (args: A) => Promise<CallToolResult>): (args: A) => Promise<CallToolResult> {
  return async (args: A) => {
    try {
      return await fn(args);
    } catch (e) {
      return errorResult(e);
    }
  };
}
