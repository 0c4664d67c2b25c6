import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { pipeline } from 'node:stream';
import type { PortProxy } from '../api/e2b/port-proxy.js';
import type { SandboxManager } from '../engine/sandbox-manager.js';
import { CONNECT_TIMEOUT_MS } from './forward.js';

/** A sandbox port that sends nothing for this long fails the request (a hung server, a stalled stream). */
const IDLE_TIMEOUT_MS = 60_000;

/** E2B's `E2b-Sandbox-Port: N` routing: the request goes to port N at the sandbox's address. */
export class SandboxPortProxy implements PortProxy {
  constructor(private readonly mgr: SandboxManager) {}

  handle(req: IncomingMessage, res: ServerResponse, sandboxId: string, port: number): void {
    const link = this.mgr.net?.links.get(sandboxId);
    const closed = (why: string) => {
      req.resume();
      if (res.headersSent) return void res.destroy();
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ code: 502, message: `port ${port} in sandbox ${sandboxId} is not open: ${why}`, sandboxId, port }));
    };
    if (!link) return closed('the sandbox has no network namespace');
    const up = http.request({ host: link.sandboxIp, port, method: req.method, path: req.url, headers: req.headers, timeout: IDLE_TIMEOUT_MS }, (r) => {
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
