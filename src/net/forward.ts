import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { isIPv4 } from 'node:net';
import { pipeline } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { CappedBodyRewrite, SseLineRewrite } from './body-rewrite.js';
import { resolveFor, type ResolveContext, type UpstreamDns } from './resolver.js';
import { mutateRequest, mutateResponseHeaders, ruleMatches } from './rules.js';
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
  /** Something the proxy did not do as asked, e.g. a body replacement skipped on a body past the cap. */
  note?: string;
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
  /** Fail an upstream exchange that moves no bytes for this long. */
  idleTimeoutMs: number;
}

const HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'upgrade', 'transfer-encoding'];
/** Upstream TCP connect deadline: a host that drops SYNs fails this request, not the sandbox's patience. */
export const CONNECT_TIMEOUT_MS = 10_000;
/**
 * Most bytes of one body the proxy holds in memory: a request body searched for secret placeholders,
 * a response body rewritten by a rule. With the per-sandbox connection cap this bounds a sandbox's
 * share of the daemon's memory.
 */
export const INSPECT_LIMIT = 1024 * 1024;

class BodyTooLarge extends Error {}
class UpstreamTimeout extends Error {}

/** The whole request body, or BodyTooLarge past INSPECT_LIMIT (refused before reading when declared). */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (Number(req.headers['content-length'] ?? 0) > INSPECT_LIMIT) return reject(new BodyTooLarge());
    const parts: Buffer[] = [];
    let n = 0;
    const onData = (c: Buffer) => {
      n += c.length;
      if (n > INSPECT_LIMIT) {
        req.off('data', onData);
        req.pause();
        return reject(new BodyTooLarge());
      }
      parts.push(c);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

/**
 * `expectsContinue`: the client sent `Expect: 100-continue` and waits for it before sending its body;
 * it is sent once the request is allowed, so a refused request never has its body uploaded.
 */
export async function forward(req: IncomingMessage, res: ServerResponse, ctx: SandboxNetContext, port: number, up: Upstream, expectsContinue = false): Promise<void> {
  const t0 = Date.now();
  const tlsName = (req.socket as TLSSocket).encrypted ? ((req.socket as TLSSocket & { servername?: string }).servername || '') : undefined;
  const hostHeader = (req.headers.host ?? '').toLowerCase();
  const host = hostHeader.replace(/:\d+$/, '').replace(/\.$/, '');
  const scheme = tlsName !== undefined ? 'https' : 'http';
  const url = `${scheme}://${hostHeader || '?'}${req.url ?? '/'}`;
  const ev: NetEvent = { method: req.method ?? '', url, host, status: 0, request_bytes: 0, response_bytes: 0, duration_ms: 0, blocked: false };
  let continued = !expectsContinue;
  const proceed = () => {
    if (!continued) res.writeContinue();
    continued = true;
  };
  const block = (reason: string, status = 403, leak?: string) => {
    Object.assign(ev, { blocked: true, block_reason: reason, status, duration_ms: Date.now() - t0, ...(leak ? { secret_leak: leak } : {}) });
    ctx.report(ev);
    // A client that is still sending its body gets the answer on a connection kept open: Node reads
    // and drops the rest, so the client sees the answer instead of a reset in the middle of its upload.
    if (!res.headersSent) res.writeHead(status, { 'content-type': 'application/json', ...(continued && !req.complete ? {} : { connection: 'close' }) });
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
  if (ctx.secrets.length && hasBody) {
    try {
      if (Number(req.headers['content-length'] ?? 0) <= INSPECT_LIMIT) proceed();
      body = await readBody(req);
    } catch (e) {
      if (!(e instanceof BodyTooLarge)) return void res.destroy();
      return block(`request body larger than ${INSPECT_LIMIT} bytes: this sandbox has secrets, and bodies are searched for their placeholders only up to that size; send less per request`, 413);
    }
  }
  let target = shape.path + (shape.query.size ? `?${shape.query.toString()}` : '');
  const headerText = JSON.stringify(shape.headers);
  const found = [...new Set([...placeholdersIn(target, ctx.secrets), ...placeholdersIn(headerText, ctx.secrets), ...(body ? placeholdersIn(body.toString('latin1'), ctx.secrets) : [])])];
  const leak = found.find((s) => !secretHostMatches(s, host, port));
  if (leak) return block(`secret ${leak.name} may not be sent to ${host}:${port}`, 403, leak.name);
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
  const secs = (ms: number) => `${Math.round(ms / 1000)}s`;
  upReq.on('socket', (sock) => {
    if (!sock.connecting) return;
    const t = setTimeout(() => upReq.destroy(new UpstreamTimeout(`could not connect within ${secs(CONNECT_TIMEOUT_MS)}`)), CONNECT_TIMEOUT_MS);
    sock.once('connect', () => clearTimeout(t));
    upReq.once('close', () => clearTimeout(t));
  });
  upReq.setTimeout(up.idleTimeoutMs, () => upReq.destroy(new UpstreamTimeout(`sent nothing for ${secs(up.idleTimeoutMs)}`)));
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
    const note = (text: string) => (ev.note = text);
    const count = (c: Buffer) => (ev.response_bytes += c.length);
    const done = (err?: Error | null) => {
      if (err && !ev.note) note(`response cut off: ${err.message}`);
      finish();
    };
    const declared = Number(upRes.headers['content-length'] ?? -1);
    const sse = String(upRes.headers['content-type'] ?? '').startsWith('text/event-stream');
    if (!reps.length || (!sse && declared > INSPECT_LIMIT)) {
      if (reps.length) note(`body replacement skipped: the body (${declared} bytes) is larger than ${INSPECT_LIMIT} bytes`);
      res.writeHead(ev.status, headers);
      upRes.on('data', count);
      return void pipeline(upRes, res, done);
    }
    delete headers['content-length'];
    res.writeHead(ev.status, headers);
    const rewrite = sse
      ? new SseLineRewrite(reps, INSPECT_LIMIT, () => note(`body replacement skipped on an event-stream line longer than ${INSPECT_LIMIT} characters`))
      : new CappedBodyRewrite(reps, INSPECT_LIMIT, () => note(`body replacement skipped: the body is larger than ${INSPECT_LIMIT} bytes`));
    rewrite.on('data', count);
    pipeline(upRes, rewrite, res, done);
  });
  upReq.on('error', (e) => {
    if (res.headersSent) return void res.destroy();
    block(`upstream ${host} (${ip}:${port}) ${e instanceof UpstreamTimeout ? '' : 'failed: '}${e.message}`, e instanceof UpstreamTimeout ? 504 : 502);
  });
  if (body) {
    ev.request_bytes = body.length;
    upReq.end(body);
  } else {
    proceed();
    req.on('data', (c: Buffer) => (ev.request_bytes += c.length));
    req.pipe(upReq);
  }
}
