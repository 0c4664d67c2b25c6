// Routes sandbox-bound requests the way E2B's client proxy does: by E2b-Sandbox-Id / E2b-Sandbox-Port
// (or a "PORT-ID.domain" Host), to envd for port 49983 and to the port proxy for any other port.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { SandboxManager } from '../../engine/sandbox-manager.js';
import type { LiveSandbox } from '../../engine/live-sandbox.js';
import { CordonError } from '../../errors/registry.js';
import { apiKeyMatches } from '../auth.js';
import { serveRpc, type MethodDef } from './connect.js';
import { ENVD_PORT, FileMetadata, userFromAuthorization } from './envd-context.js';
import { filesystemService, WatcherRegistry } from './filesystem-service.js';
import { handleFiles, sendJsonError } from './files-http.js';
import type { PortProxy } from './port-proxy.js';
import { processService } from './process-service.js';
import { fileSignature, sameSecret, type EnvdTokens } from './tokens.js';
import { e2bState } from './views.js';

const ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const HOST = /^(\d{1,5})-([a-z0-9][a-z0-9_-]{0,127})\.([^:]+)(?::\d{1,5})?$/;
/** The header E2B's proxy reads the traffic access token from. */
export const TRAFFIC_TOKEN_HEADER = 'e2b-traffic-access-token';
/** envd's own messages, so clients that match on them keep working. */
const UNAUTHORIZED = 'unauthorized access, please provide a valid access token or method signing if supported';
const INVALID_SIGNATURE = 'invalid signature';
const EXPIRED_SIGNATURE = 'signature is already expired';

interface Target {
  sandboxId: string;
  port: number;
}

/** envd's validateSigning for one token: undefined when the URL's signature is valid, else envd's message. */
function signingError(url: URL, op: 'read' | 'write', token: string): string | undefined {
  const sig = url.searchParams.get('signature');
  if (!sig) return 'missing signature query parameter';
  const exp = url.searchParams.get('signature_expiration');
  if (exp !== null && !/^\d{1,12}$/.test(exp)) return INVALID_SIGNATURE;
  const expected = fileSignature(url.searchParams.get('path') ?? '', op, url.searchParams.get('username') ?? '', token, exp === null ? undefined : Number(exp));
  if (!sameSecret(sig, expected)) return INVALID_SIGNATURE;
  if (exp !== null && Number(exp) < Math.floor(Date.now() / 1000)) return EXPIRED_SIGNATURE;
  return undefined;
}

const fileOp = (req: IncomingMessage): 'read' | 'write' => (req.method === 'POST' ? 'write' : 'read');

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
    if (this.hostTarget(req)) return true;
    // Signed file URLs come with no headers at all; the signature names the sandbox.
    return /^\/files(\?|$)/.test(req.url ?? '') && /[?&]signature=/.test(req.url ?? '');
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://envd');
      const target = this.target(req, url);
      if (typeof target === 'string') return this.reject(req, res, target === INVALID_SIGNATURE ? 401 : 400, target);
      const rec = this.mgr.store.get(target.sandboxId);
      // E2B's proxy answers 502 for a sandbox that is not there; the SDK reads that as "gone".
      if (!rec || !e2bState(rec)) return this.reject(req, res, 502, `sandbox ${target.sandboxId} is not running (it does not exist or expired)`);
      const e2b = this.tokens.sandbox(rec.id);
      let signedOnly = false;
      if (target.port === ENVD_PORT) {
        const auth = this.envdAuth(req, url, rec.id);
        if (auth.error) return this.reject(req, res, 401, auth.error);
        signedOnly = auth.by === 'signature';
      } else {
        // A sandbox made through the native API has no E2B traffic rules: its ports belong to whoever
        // holds the daemon's key (E2B's public-by-default applies once it is connected through E2B).
        const key = this.mgr.cfg.apiKey;
        if (!e2b && key && !apiKeyMatches(req, key)) {
          return this.reject(req, res, 401, `port ${target.port} of sandbox ${rec.id} needs the daemon's API key (Authorization: Bearer KEY) until the sandbox is connected through the E2B API`);
        }
        const problem = this.trafficAuthError(req, e2b?.trafficToken);
        if (problem) return this.sendTrafficError(req, res, rec.id, problem);
      }
      // A sandbox paused for idleness wakes for any authorised call (serve --idle-pause); the call keeps it awake until answered.
      const release = await this.mgr.idle?.enter(rec.id);
      if (release) res.once('close', release);
      // An authorised request wakes a paused sandbox created with autoResume, as E2B's proxy does.
      if (this.mgr.store.get(rec.id)?.state === 'paused' && e2b?.options.autoResume) await this.mgr.resume(rec.id).catch(() => {});
      const live = this.mgr.store.get(rec.id)?.state === 'running' ? this.mgr.live.get(rec.id) : undefined;
      if (!live) return this.reject(req, res, 502, `sandbox ${target.sandboxId} is not running (it is paused or stopped; connect to resume it)`);
      if (target.port !== ENVD_PORT) {
        delete req.headers[TRAFFIC_TOKEN_HEADER];
        const mask = e2b?.options.maskRequestHost;
        if (mask) req.headers.host = mask.replaceAll('${PORT}', String(target.port));
        return void (await this.proxy.handle(req, res, target.sandboxId, target.port));
      }
      await this.dispatch(req, res, url, target.sandboxId, live, signedOnly);
    } catch (e) {
      this.reject(req, res, 500, `internal error: ${(e as Error).message}`);
    }
  }

  /** "PORT-ID.DOMAIN": any domain, or only the daemon's --domain when it has one. */
  private hostTarget(req: IncomingMessage): Target | undefined {
    const m = HOST.exec(String(req.headers.host ?? '').toLowerCase());
    if (!m) return undefined;
    const domain = this.mgr.cfg.domain;
    if (domain && m[3] !== domain) return undefined;
    const port = Number(m[1]);
    return port >= 1 && port <= 65535 ? { sandboxId: m[2], port } : undefined;
  }

  /** The sandbox and port a request is for, or what is wrong with its addressing. */
  private target(req: IncomingMessage, url: URL): Target | string {
    const hid = req.headers['e2b-sandbox-id'];
    const hport = req.headers['e2b-sandbox-port'];
    if (hid !== undefined || hport !== undefined) {
      const port = hport === undefined ? ENVD_PORT : Number(hport);
      if (typeof hid !== 'string' || !ID.test(hid) || !Number.isInteger(port) || port < 1 || port > 65535) {
        return 'E2b-Sandbox-Id and E2b-Sandbox-Port must name a sandbox and a port (1-65535)';
      }
      return { sandboxId: hid, port };
    }
    const byHost = this.hostTarget(req);
    if (byHost) return byHost;
    // A signed URL names its sandbox only through the token that made the signature (expired or not).
    const op = fileOp(req);
    for (const { sandboxId, token } of this.tokens.all()) {
      const err = signingError(url, op, token);
      if (err === undefined || err === EXPIRED_SIGNATURE) return { sandboxId, port: ENVD_PORT };
    }
    return INVALID_SIGNATURE;
  }

  /**
   * envd's WithAuthorization and validateSigning: how the request is allowed (its access token, or a
   * URL signature, which binds path, operation and user), else envd's 401 message.
   */
  private envdAuth(req: IncomingMessage, url: URL, sandboxId: string): { error?: string; by?: 'token' | 'signature' | 'open' } {
    const token = this.tokens.get(sandboxId);
    if (!token) return { error: `${UNAUTHORIZED} (connect to sandbox ${sandboxId} through the E2B API first to get its envdAccessToken)` };
    const files = url.pathname === '/files' && (req.method === 'GET' || req.method === 'POST');
    const given = req.headers['x-access-token'];
    if (typeof given === 'string' && given !== '') {
      if (sameSecret(given, token)) return { by: 'token' };
      return { error: files ? 'access token present in header but does not match' : UNAUTHORIZED };
    }
    if (req.method === 'GET' && url.pathname === '/health') return { by: 'open' };
    if (!files) return { error: UNAUTHORIZED };
    const error = signingError(url, fileOp(req), token);
    return error ? { error } : { by: 'signature' };
  }

  /** E2B's proxy: with a traffic token set, every port but envd's needs it in e2b-traffic-access-token. */
  private trafficAuthError(req: IncomingMessage, expected: string | undefined): 'missing' | 'invalid' | undefined {
    if (!expected) return undefined;
    const given = req.headers[TRAFFIC_TOKEN_HEADER];
    if (typeof given !== 'string' || given === '') return 'missing';
    return sameSecret(given, expected) ? undefined : 'invalid';
  }

  private sendTrafficError(req: IncomingMessage, res: ServerResponse, sandboxId: string, problem: 'missing' | 'invalid'): void {
    req.resume();
    const message =
      problem === 'missing'
        ? `Sandbox is secured with traffic access token. Token header '${TRAFFIC_TOKEN_HEADER}' is missing`
        : `Sandbox is secured with traffic access token. Provided token in header '${TRAFFIC_TOKEN_HEADER}' is invalid`;
    res.writeHead(403, { 'content-type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify({ sandboxId, message, code: 403 }));
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse, url: URL, sandboxId: string, live: LiveSandbox, signedOnly: boolean): Promise<void> {
    const path = url.pathname;
    if (path === '/health') {
      req.resume();
      res.writeHead(204);
      return void res.end();
    }
    if (path === '/files') {
      // A signature names its user (the username parameter, or the default one): a header cannot change it.
      const headerUser = signedOnly ? undefined : userFromAuthorization(req.headers);
      const { maxUploadBytes, streamWriteDeadlineMs: writeDeadlineMs } = this.mgr.cfg;
      return handleFiles(req, res, { sandboxId, live, url, headerUser, maxUploadBytes, writeDeadlineMs }, this.meta, this.watchers);
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
