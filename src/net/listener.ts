import http from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, TLSSocket } from 'node:tls';
import type { CertAuthority } from './ca.js';
import { forward, type SandboxNetContext, type Upstream } from './forward.js';

// A transparent listener for one original destination port. Sandbox connections arrive here by DNAT;
// the first byte tells TLS (terminated with a cordon-signed certificate for the SNI) from plain HTTP.

const SNI_RE = /^[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*$/i;

/**
 * Concurrent proxied connections per sandbox, over all listeners, and the idle deadline of a
 * connection before the HTTP server takes it over (first byte, TLS handshake). The cap bounds what
 * one sandbox can hold of the daemon (sockets, buffers up to INSPECT_LIMIT each); 256 is far above
 * what a browser or package manager opens to one proxy at once (Chrome: 256 per proxy, 6 per host).
 */
export class ConnectionCap {
  private readonly open = new Map<string, number>();
  private readonly reported = new Map<string, number>();

  constructor(readonly max: number, readonly idleTimeoutMs: number) {}

  /** Take a slot for the sandbox; false when it already holds `max`. */
  take(id: string): boolean {
    const n = this.open.get(id) ?? 0;
    if (n >= this.max) return false;
    this.open.set(id, n + 1);
    return true;
  }

  release(id: string): void {
    const n = (this.open.get(id) ?? 1) - 1;
    if (n > 0) this.open.set(id, n);
    else this.open.delete(id);
  }

  /** Refusals are reported at most once a second per sandbox, so a connect flood cannot flood the event log. */
  shouldReport(id: string): boolean {
    const now = Date.now();
    if (now - (this.reported.get(id) ?? 0) < 1000) return false;
    this.reported.set(id, now);
    return true;
  }
}

export class TransparentListener {
  private readonly server: Server;
  private readonly http: http.Server;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(
    readonly origPort: number,
    private readonly ctxFor: (sourceIp: string) => SandboxNetContext | undefined,
    private readonly ca: CertAuthority,
    private readonly up: Upstream,
    private readonly cap: ConnectionCap,
  ) {
    const handle = (req: http.IncomingMessage, res: http.ServerResponse, expectsContinue: boolean) => {
      const ctx = this.ctxFor(req.socket.remoteAddress ?? '') ?? this.ctxFor((req.socket as TLSSocket & { _parent?: Socket })._parent?.remoteAddress ?? '');
      if (!ctx) return void res.destroy();
      forward(req, res, ctx, this.origPort, this.up, expectsContinue).catch(() => res.destroy());
    };
    this.http = http.createServer((req, res) => handle(req, res, false));
    // Expect: 100-continue is answered by forward once the request is allowed.
    this.http.on('checkContinue', (req, res) => handle(req, res, true));
    this.http.on('clientError', (_e, s) => s.destroy());
    this.server = createServer((s) => this.accept(s));
  }

  listen(address: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, address, () => {
        this.port = (this.server.address() as { port: number }).port;
        resolve();
      });
    });
  }

  private accept(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    const ctx = this.ctxFor(sock.remoteAddress ?? '');
    if (!ctx) return void sock.destroy();
    const report = (reason: string, host = '') =>
      ctx.report({ method: '', url: `tls://${host || sock.remoteAddress}:${this.origPort}`, host, status: 0, request_bytes: 0, response_bytes: 0, duration_ms: 0, blocked: true, block_reason: reason });
    if (!this.cap.take(ctx.id)) {
      if (this.cap.shouldReport(ctx.id)) report(`too many connections: the sandbox already holds ${this.cap.max} proxied connections (cordon serve --egress-max-connections)`);
      return void sock.resetAndDestroy();
    }
    sock.once('close', () => this.cap.release(ctx.id));
    // Until the HTTP server has the connection (first byte, TLS handshake), an idle one is dropped;
    // from then on the server's own header/request timeouts and the upstream idle timeout apply.
    sock.setTimeout(this.cap.idleTimeoutMs, () => sock.destroy());
    const handOver = (s: Socket) => {
      sock.setTimeout(0);
      this.http.emit('connection', s);
    };
    sock.once('data', (first: Buffer) => {
      sock.pause();
      sock.unshift(first);
      if (first[0] !== 0x16) {
        handOver(sock);
        sock.resume();
        return;
      }
      const tls = new TLSSocket(sock, {
        isServer: true,
        SNICallback: (name, cb) => {
          const v = SNI_RE.test(name) ? ctx.policy.name(name) : { allowed: false, reason: 'malformed SNI' };
          if (!v.allowed) {
            report(v.reason, name);
            return cb(new Error(v.reason));
          }
          this.ca.leaf(name.toLowerCase()).then(
            (cert) => cb(null, createSecureContext({ key: this.ca.leafKeyPem, cert })),
            (e: Error) => cb(e),
          );
        },
      });
      tls.on('error', () => sock.destroy());
      tls.once('secure', () => {
        if (!(tls as TLSSocket & { servername?: string }).servername) {
          report('TLS without SNI (raw address)');
          return tls.destroy();
        }
        handOver(tls);
      });
    });
  }

  close(): void {
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }
}
