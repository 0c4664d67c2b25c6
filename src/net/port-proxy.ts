import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { PortProxy } from '../api/e2b/port-proxy.js';
import type { SandboxManager } from '../engine/sandbox-manager.js';

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
    const up = http.request({ host: link.sandboxIp, port, method: req.method, path: req.url, headers: req.headers, timeout: 30_000 }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', (e: NodeJS.ErrnoException) => closed(e.code === 'ECONNREFUSED' ? 'nothing listens there' : e.message));
    up.on('timeout', () => up.destroy(new Error('timed out')));
    req.pipe(up);
  }
}
