import http from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, TLSSocket } from 'node:tls';
import type { CertAuthority } from './ca.js';
import { forward, type SandboxNetContext, type Upstream } from './forward.js';

// A transparent listener for one original destination port. Sandbox connections arrive here by DNAT;
// the first byte tells TLS (terminated with a cordon-signed certificate for the SNI) from plain HTTP.

const SNI_RE = /^[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*$/i;

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
  ) {
    this.http = http.createServer((req, res) => {
      const ctx = this.ctxFor(req.socket.remoteAddress ?? '') ?? this.ctxFor((req.socket as TLSSocket & { _parent?: Socket })._parent?.remoteAddress ?? '');
      if (!ctx) return res.destroy();
      forward(req, res, ctx, this.origPort, this.up).catch(() => res.destroy());
    });
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
    sock.once('data', (first: Buffer) => {
      sock.pause();
      sock.unshift(first);
      if (first[0] !== 0x16) {
        this.http.emit('connection', sock);
        sock.resume();
        return;
      }
      const report = (reason: string, host = '') =>
        ctx.report({ method: '', url: `tls://${host || sock.remoteAddress}:${this.origPort}`, host, status: 0, request_bytes: 0, response_bytes: 0, duration_ms: 0, blocked: true, block_reason: reason });
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
        this.http.emit('connection', tls);
      });
    });
  }

  close(): void {
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }
}
