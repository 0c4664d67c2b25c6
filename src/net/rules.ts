import type { IncomingHttpHeaders } from 'node:http';
import { globToRegex } from './policy.js';
import type { BodyReplacement, HookRule } from './types.js';

// Interception rules (matchlock's NetworkHookRule): matching and the mutations they apply.

export function ruleMatches(r: HookRule, phase: 'before' | 'after', host: string, method: string, path: string): boolean {
  if (r.phase !== phase) return false;
  if (r.hosts.length && !r.hosts.some((h) => globToRegex(h).test(host))) return false;
  if (r.methods.length && !r.methods.some((m) => m.toUpperCase() === method.toUpperCase())) return false;
  if (r.path && !globToRegex(r.path).test(path)) return false;
  return true;
}

export interface RequestShape {
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
}

export function mutateRequest(r: HookRule, req: RequestShape): void {
  for (const h of r.deleteHeaders ?? []) delete req.headers[h.toLowerCase()];
  for (const [k, v] of Object.entries(r.setHeaders ?? {})) req.headers[k.toLowerCase()] = v;
  for (const q of r.deleteQuery ?? []) req.query.delete(q);
  for (const [k, v] of Object.entries(r.setQuery ?? {})) req.query.set(k, v);
  if (r.rewritePath) req.path = r.rewritePath;
}

export function mutateResponseHeaders(r: HookRule, headers: Record<string, string | string[] | undefined>): void {
  for (const h of r.deleteResponseHeaders ?? []) delete headers[h.toLowerCase()];
  for (const [k, v] of Object.entries(r.setResponseHeaders ?? {})) headers[k.toLowerCase()] = v;
}

export function replaceBody(text: string, reps: BodyReplacement[]): string {
  let out = text;
  for (const r of reps) if (r.find) out = out.split(r.find).join(r.replace);
  return out;
}

/** For text/event-stream: replacements apply to each `data:` line's payload only. */
export function replaceSseLine(line: string, reps: BodyReplacement[]): string {
  if (!line.startsWith('data:')) return line;
  return `data:${replaceBody(line.slice(5), reps)}`;
}
