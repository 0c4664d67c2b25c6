// Routes sandbox-bound requests the way E2B's client proxy does: by E2b-Sandbox-Id / E2b-Sandbox-Port
// (or a "PORT-ID.domain" Host), to envd for port 49983 and to the port proxy for any other port.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SandboxManager } from '../../engine/sandbox-manager.js';
import type { LiveSandbox } from '../../engine/live-sandbox.js';
import { CordonError } from '../../errors/registry.js';
import { serveRpc, type MethodDef } from './connect.js';
import { ENVD_PORT, FileMetadata, userFromAuthorization } from './envd-context.js';
import { filesystemService, WatcherRegistry } from './filesystem-service.js';
import { handleFiles, sendJsonError } from './files-http.js';
import type { PortProxy } from './port-proxy.js';
import { processService } from './process-service.js';
import { fileSignature, sameSecret, type EnvdTokens } from './tokens.js';

const ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const HOST = /^(\d{1,5})-([A-Za-z0-9][A-Za-z0-9_-]{0,127})\./;

interface Target {
  sandboxId: string;
  port: number;
}

export class EnvdRouter {
  readonly meta = new FileMetadata();
  private readonly watchers = new WatcherRegistry();

  constructor(
    private readonly mgr: SandboxManager,
    private readonly tokens: EnvdTokens,
    private readonly proxy: PortProxy,
  ) {}

  /** Is this request for a sandbox rather than for the daemon's own API? */
  claims(req: IncomingMessage): boolean {
    if (req.headers['e2b-sandbox-id'] !== undefined || req.headers['e2b-sandbox-port'] !== undefined) return true;
    if (HOST.test(String(req.headers.host ?? ''))) return true;
    // Signed file URLs come with no headers at all; the signature names the sandbox.
    return /^\/files(\?|$)/.test(req.url ?? '') && /[?&]signature=/.test(req.url ?? '');
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://envd');
      const target = this.target(req, url);
      if (!target) return this.reject(req, res, 400, 'E2b-Sandbox-Id and E2b-Sandbox-Port must name a sandbox and a port (1-65535); signed URLs must carry a valid signature');
      const rec = this.mgr.store.get(target.sandboxId);
      const live = rec?.state === 'running' ? this.mgr.live.get(rec.id) : undefined;
      // E2B's proxy answers 502 for a sandbox that is not running; the SDK reads that as "gone".
      if (!live) return this.reject(req, res, 502, `sandbox ${target.sandboxId} is not running (it does not exist, expired, or is paused)`);
      if (target.port !== ENVD_PORT) return void (await this.proxy.handle(req, res, target.sandboxId, target.port));
      if (!this.authorized(req, url, target.sandboxId)) {
        return this.reject(req, res, 401, 'missing or wrong X-Access-Token for this sandbox (use the envdAccessToken from create/connect), or an invalid/expired URL signature');
      }
      await this.dispatch(req, res, url, target.sandboxId, live);
    } catch (e) {
      this.reject(req, res, 500, `internal error: ${(e as Error).message}`);
    }
  }

  private target(req: IncomingMessage, url: URL): Target | undefined {
    const hid = req.headers['e2b-sandbox-id'];
    const hport = req.headers['e2b-sandbox-port'];
    if (hid !== undefined || hport !== undefined) {
      if (typeof hid !== 'string' || !ID.test(hid)) return undefined;
      const port = hport === undefined ? ENVD_PORT : Number(hport);
      return Number.isInteger(port) && port >= 1 && port <= 65535 ? { sandboxId: hid, port } : undefined;
    }
    const m = HOST.exec(String(req.headers.host ?? ''));
    if (m) {
      const port = Number(m[1]);
      return port >= 1 && port <= 65535 ? { sandboxId: m[2], port } : undefined;
    }
    const owner = this.signatureOwner(url, req.method === 'POST' ? 'write' : 'read');
    return owner ? { sandboxId: owner, port: ENVD_PORT } : undefined;
  }

  /** The sandbox whose token produced this URL's signature, if any (and if not expired). */
  private signatureOwner(url: URL, op: 'read' | 'write'): string | undefined {
    const sig = url.searchParams.get('signature');
    if (!sig) return undefined;
    const exp = url.searchParams.get('signature_expiration');
    if (exp !== null && (!/^\d{1,12}$/.test(exp) || Number(exp) * 1000 < Date.now())) return undefined;
    const path = url.searchParams.get('path') ?? '';
    const user = url.searchParams.get('username') ?? '';
    for (const { sandboxId, token } of this.tokens.all()) {
      if (sameSecret(sig, fileSignature(path, op, user, token, exp === null ? undefined : Number(exp)))) return sandboxId;
    }
    return undefined;
  }

  private authorized(req: IncomingMessage, url: URL, sandboxId: string): boolean {
    const token = this.tokens.get(sandboxId);
    if (!token) return false;
    const given = req.headers['x-access-token'];
    if (typeof given === 'string' && sameSecret(given, token)) return true;
    return url.pathname === '/files' && this.signatureOwner(url, req.method === 'POST' ? 'write' : 'read') === sandboxId;
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse, url: URL, sandboxId: string, live: LiveSandbox): Promise<void> {
    const path = url.pathname;
    if (path === '/health') {
      req.resume();
      res.writeHead(204);
      return void res.end();
    }
    if (path === '/files') {
      const headerUser = userFromAuthorization(req.headers);
      return handleFiles(req, res, { sandboxId, live, url, headerUser }, this.meta);
    }
    const m = /^\/(process\.Process|filesystem\.Filesystem)\/([A-Za-z]+)$/.exec(path);
    if (m) {
      // Re-resolve the live sandbox per call so a stream notices the sandbox going away.
      const getLive = () => {
        const l = this.mgr.live.get(sandboxId);
        if (!l) throw new CordonError('unavailable', `sandbox ${sandboxId} is not running anymore`);
        return l;
      };
      const svc: Record<string, MethodDef> =
        m[1] === 'process.Process' ? processService(getLive) : filesystemService(sandboxId, getLive, this.meta, this.watchers);
      const flow = { highWaterBytes: this.mgr.cfg.streamHighWaterBytes, writeDeadlineMs: this.mgr.cfg.streamWriteDeadlineMs };
      return serveRpc(req, res, Object.hasOwn(svc, m[2]) ? svc[m[2]] : undefined, flow);
    }
    this.reject(req, res, 404, `envd has no ${req.method} ${path}; see E2B's envd spec (process.Process, filesystem.Filesystem, /files, /health)`);
  }

  private reject(req: IncomingMessage, res: ServerResponse, status: number, message: string): void {
    req.resume();
    sendJsonError(res, status, message);
  }
}
