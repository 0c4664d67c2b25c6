import { createHash, timingSafeEqual } from 'node:crypto';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import type { PortProxy } from '../api/e2b/port-proxy.js';
import type { NetworkService } from './service.js';
import { CONNECT_TIMEOUT_MS } from './forward.js';

/** A sandbox port that sends nothing for this long fails the request (a hung server, a stalled stream). */
const IDLE_TIMEOUT_MS = 60_000;

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * The headers a request to a sandbox port keeps: none of E2B's routing and access tokens
 * (E2b-*, X-Access-Token), no cordon header, and no Authorization / X-API-Key carrying the
 * daemon's API key. Code in the sandbox is untrusted; it must never see a credential of the daemon.
 */
export function headersForSandbox(headers: IncomingHttpHeaders, apiKey: string | undefined): IncomingHttpHeaders {
  const isKey = (v: string | string[] | undefined, scheme?: string) => {
    if (!apiKey || typeof v !== 'string') return false;
    const given = scheme ? (v.toLowerCase().startsWith(`${scheme} `) ? v.slice(scheme.length + 1).trim() : undefined) : v.trim();
    return given !== undefined && timingSafeEqual(digest(given), digest(apiKey));
  };
  const out: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    const name = k.toLowerCase();
    if (name.startsWith('e2b-') || name === 'x-access-token' || name.startsWith('x-cordon-') || name.startsWith('cordon-')) continue;
    if (name === 'authorization' && isKey(v, 'bearer')) continue;
    if (name === 'x-api-key' && isKey(v)) continue;
    out[name] = v;
  }
  return out;
}

/** E2B's `E2b-Sandbox-Port: N` routing: the request goes to port N at the sandbox's address. */
export class SandboxPortProxy implements PortProxy {
  constructor(
    private readonly net: NetworkService | undefined,
    private readonly apiKey?: string,
  ) {}

  handle(req: IncomingMessage, res: ServerResponse, sandboxId: string, port: number): void {
    const link = this.net?.links.get(sandboxId);
    const closed = (why: string) => {
      req.resume();
      if (res.headersSent) return void res.destroy();
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 502, message: `port ${port} in sandbox ${sandboxId} is not open: ${why}`, sandboxId, port }));
    };
    if (!link) return closed('the sandbox has no network namespace');
    const headers = headersForSandbox(req.headers, this.apiKey);
    const up = http.request({ host: link.sandboxIp, port, method: req.method, path: req.url, headers, timeout: IDLE_TIMEOUT_MS }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      pipeline(r, res, () => {});
    });
    up.on('socket', (sock) => {
      if (!sock.connecting) return;
      const t = setTimeout(() => up.destroy(new Error(`connecting took longer than ${CONNECT_TIMEOUT_MS / 1000}s`)), CONNECT_TIMEOUT_MS);
      sock.once('connect', () => clearTimeout(t));
      up.once('close', () => clearTimeout(t));
    });
    up.on('error', (e: NodeJS.ErrnoException) => closed(e.code === 'ECONNREFUSED' ? 'nothing listens there' : e.message));
    up.on('timeout', () => up.destroy(new Error(`it sent nothing for ${IDLE_TIMEOUT_MS / 1000}s`)));
    // The client went away: so does the request to the sandbox.
    res.on('close', () => res.writableFinished || up.destroy());
    req.pipe(up);
  }
}
