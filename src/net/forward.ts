import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { isIPv4 } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { resolveFor, type ResolveContext, type UpstreamDns } from './resolver.js';
import { mutateRequest, mutateResponseHeaders, replaceBody, replaceSseLine, ruleMatches } from './rules.js';
import { placeholdersIn, redact, secretHostMatches, substitute } from './secrets.js';
import type { AskResult, CallbackDecision, CallbackSummary } from './callbacks.js';
import type { HookRule, SecretSpec } from './types.js';

// One intercepted HTTP request: policy, secrets, interception rules, the upstream call through the
// egress address, and the event that records it.

export interface NetEvent {
  method: string;
  url: string;
  host: string;
  status: number;
  request_bytes: number;
  response_bytes: number;
  duration_ms: number;
  blocked: boolean;
  block_reason?: string;
  secret_leak?: string;
}

export interface SandboxNetContext extends ResolveContext {
  id: string;
  secrets: SecretSpec[];
  rules: HookRule[];
  report(e: NetEvent): void;
  /** Ask the SDK client connected for this sandbox (rules with action callback). */
  ask?(summary: CallbackSummary, timeoutMs: number): Promise<AskResult>;
}

/** A callback rule's outcome: the client's decision, or the rule's on_timeout action. */
async function consult(ctx: SandboxNetContext, r: HookRule, summary: CallbackSummary): Promise<{ d: CallbackDecision; why: string }> {
  const res = ctx.ask ? await ctx.ask({ ...summary, rule: r.name }, r.timeoutMs ?? 5000) : { none: 'callbacks are not available' };
  if ('decision' in res) return { d: res.decision, why: `callback${r.name ? ` ${r.name}` : ''}${res.decision.reason ? `: ${res.decision.reason}` : ''}` };
  return { d: { action: r.onTimeout ?? 'block' }, why: `callback${r.name ? ` ${r.name}` : ''}: ${res.none} (on_timeout ${r.onTimeout ?? 'block'})` };
}

const asRule = (d: CallbackDecision): HookRule => ({
  phase: 'before', hosts: [], methods: [], action: 'mutate',
  setHeaders: d.set_headers, deleteHeaders: d.delete_headers, setQuery: d.set_query, deleteQuery: d.delete_query, rewritePath: d.rewrite_path,
  setResponseHeaders: d.set_response_headers, deleteResponseHeaders: d.delete_response_headers,
});

export interface Upstream {
  dns: UpstreamDns;
  localAddress: string;
  http: http.Agent;
  https: https.Agent;
}

const HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'upgrade', 'transfer-encoding'];
const MAX_BODY = 16 * 1024 * 1024;

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > MAX_BODY) return reject(new Error('request body too large to inspect'));
      parts.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

export async function forward(req: IncomingMessage, res: ServerResponse, ctx: SandboxNetContext, port: number, up: Upstream): Promise<void> {
  const t0 = Date.now();
  const tlsName = (req.socket as TLSSocket).encrypted ? ((req.socket as TLSSocket & { servername?: string }).servername || '') : undefined;
  const hostHeader = (req.headers.host ?? '').toLowerCase();
  const host = hostHeader.replace(/:\d+$/, '').replace(/\.$/, '');
  const scheme = tlsName !== undefined ? 'https' : 'http';
  const url = `${scheme}://${hostHeader || '?'}${req.url ?? '/'}`;
  const ev: NetEvent = { method: req.method ?? '', url, host, status: 0, request_bytes: 0, response_bytes: 0, duration_ms: 0, blocked: false };
  const block = (reason: string, status = 403, leak?: string) => {
    Object.assign(ev, { blocked: true, block_reason: reason, status, duration_ms: Date.now() - t0, ...(leak ? { secret_leak: leak } : {}) });
    ctx.report(ev);
    if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
    res.end(JSON.stringify({ error: leak ? 'ErrSecretLeak' : 'ErrBlocked', reason }));
    req.resume();
  };
  if (!host) return block('request without a Host header');
  if (tlsName !== undefined && host !== tlsName.toLowerCase()) return block(`Host ${host} does not match TLS SNI ${tlsName || '(none)'}`);
  let ip = host;
  if (!isIPv4(host)) {
    const r = await resolveFor(ctx, up.dns, host).catch((e: Error) => ({ ips: [] as string[], reason: `lookup failed: ${e.message}` }));
    if (r.reason || !r.ips.length) return block(r.reason ?? `${host} has no address`);
    ip = r.ips[0];
  }
  const v = ctx.policy.connection(host, ip, port);
  if (!v.allowed) return block(v.reason);

  const parsed = new URL(req.url ?? '/', 'http://x');
  const shape = { path: parsed.pathname, query: parsed.searchParams, headers: { ...req.headers } };
  const method = req.method ?? 'GET';
  for (const r of ctx.rules.filter((r) => ruleMatches(r, 'before', host, method, parsed.pathname))) {
    if (r.action === 'callback') {
      const { d, why } = await consult(ctx, r, { phase: 'before', method, host, path: shape.path, query: shape.query.toString(), headers: { ...shape.headers } });
      if (d.action === 'block') return block(`blocked by ${why}`);
      if (d.action === 'allow') break;
      mutateRequest(asRule(d), shape);
      continue;
    }
    if (r.action === 'block') return block(`blocked by rule ${r.name ?? '(unnamed)'}`);
    if (r.action === 'allow') break;
    mutateRequest(r, shape);
  }
  // What callbacks of phase after see: the request before secrets are substituted.
  const seen = { path: shape.path, query: shape.query.toString(), headers: { ...shape.headers } };
  for (const h of HOP) delete shape.headers[h];

  // Secrets: placeholders in the URL, headers or body; all must be bound for this host.
  let body: Buffer | undefined;
  const hasBody = req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0' || req.headers['transfer-encoding'] !== undefined;
  if (ctx.secrets.length && hasBody) body = await readBody(req).catch(() => undefined);
  let target = shape.path + (shape.query.size ? `?${shape.query.toString()}` : '');
  const headerText = JSON.stringify(shape.headers);
  const found = [...new Set([...placeholdersIn(target, ctx.secrets), ...placeholdersIn(headerText, ctx.secrets), ...(body ? placeholdersIn(body.toString('latin1'), ctx.secrets) : [])])];
  const leak = found.find((s) => !secretHostMatches(s, host));
  if (leak) return block(`secret ${leak.name} may not be sent to ${host}`, 403, leak.name);
  if (found.length) {
    target = substitute(target, found);
    for (const [k, val] of Object.entries(shape.headers)) {
      if (typeof val === 'string') shape.headers[k] = substitute(val, found);
      else if (Array.isArray(val)) shape.headers[k] = val.map((x) => substitute(x, found));
    }
    if (body) body = Buffer.from(substitute(body.toString('latin1'), found), 'latin1');
  }
  if (body) shape.headers['content-length'] = String(body.length);
  shape.headers.host = hostHeader;

  const after = ctx.rules.filter((r) => ruleMatches(r, 'after', host, method, shape.path));
  const lib = tlsName !== undefined ? https : http;
  const upReq = lib.request({
    host: ip, port, method, path: target, headers: shape.headers, localAddress: up.localAddress,
    agent: tlsName !== undefined ? up.https : up.http,
    ...(tlsName !== undefined ? { servername: host } : {}),
  });
  upReq.on('response', async (upRes) => {
    const headers: Record<string, string | string[] | undefined> = { ...upRes.headers };
    for (const h of HOP) delete headers[h];
    for (const r of after) {
      if (r.action !== 'callback') {
        mutateResponseHeaders(r, headers);
        continue;
      }
      const { d, why } = await consult(ctx, r, { phase: 'after', method, host, ...seen, status: upRes.statusCode ?? 0, response_headers: { ...headers } });
      if (d.action === 'block') {
        upRes.resume();
        return block(`blocked by ${why}`);
      }
      if (d.action === 'allow') break;
      mutateResponseHeaders(asRule(d), headers);
    }
    const reps = after.flatMap((r) => r.bodyReplacements ?? []);
    ev.status = upRes.statusCode ?? 0;
    const finish = () => {
      ev.duration_ms = Date.now() - t0;
      ev.url = redact(ev.url, ctx.secrets);
      ctx.report(ev);
    };
    if (!reps.length) {
      res.writeHead(ev.status, headers);
      upRes.on('data', (c: Buffer) => (ev.response_bytes += c.length));
      upRes.pipe(res);
      upRes.on('end', finish);
      return;
    }
    delete headers['content-length'];
    res.writeHead(ev.status, headers);
    if (String(upRes.headers['content-type'] ?? '').startsWith('text/event-stream')) {
      let pending = '';
      upRes.setEncoding('utf8');
      upRes.on('data', (c: string) => {
        pending += c;
        const lines = pending.split('\n');
        pending = lines.pop()!;
        const out = lines.map((l) => replaceSseLine(l, reps)).join('\n') + (lines.length ? '\n' : '');
        ev.response_bytes += Buffer.byteLength(out);
        res.write(out);
      });
      upRes.on('end', () => {
        res.end(replaceSseLine(pending, reps));
        finish();
      });
    } else {
      const parts: Buffer[] = [];
      upRes.on('data', (c: Buffer) => parts.push(c));
      upRes.on('end', () => {
        const out = replaceBody(Buffer.concat(parts).toString('utf8'), reps);
        ev.response_bytes = Buffer.byteLength(out);
        res.end(out);
        finish();
      });
    }
  });
  upReq.on('error', (e) => {
    if (res.headersSent) return res.destroy();
    block(`upstream ${host} (${ip}:${port}) failed: ${e.message}`, 502);
  });
  if (body) {
    ev.request_bytes = body.length;
    upReq.end(body);
  } else {
    req.on('data', (c: Buffer) => (ev.request_bytes += c.length));
    req.pipe(upReq);
  }
}
