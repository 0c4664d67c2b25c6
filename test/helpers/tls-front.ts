import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOk } from '../../src/util/proc.js';
import { freePort } from './daemon.js';

/**
 * TLS in front of a cordon daemon, the way the README shows it: Debian's nginx terminates TLS for
 * DOMAIN and *.DOMAIN with a certificate from a throwaway CA and passes requests (Host kept,
 * streaming, no body buffering) to the daemon on loopback. Clients reach it through `connectProxy`,
 * an HTTP CONNECT relay that sends every *.DOMAIN:443 tunnel to nginx: the tests' stand-in for
 * wildcard DNS, so nothing resolves or leaves the machine.
 */
export interface TlsFront {
  caFile: string;
  /** http://127.0.0.1:PORT, for the SDK's `proxy` option (or undici's ProxyAgent). */
  connectProxy: string;
  close(): Promise<void>;
}

/** The nginx server block the README documents, with this test's paths and ports. */
export function nginxConfig(o: { dir: string; listen: number; domain: string; daemon: string }): string {
  const tmp = (n: string) => join(o.dir, n);
  return `
daemon off;
user root;
worker_processes 1;
pid ${tmp('nginx.pid')};
error_log ${tmp('error.log')} warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${tmp('body')};
  proxy_temp_path ${tmp('proxy')};
  fastcgi_temp_path ${tmp('fastcgi')};
  uwsgi_temp_path ${tmp('uwsgi')};
  scgi_temp_path ${tmp('scgi')};
  map $http_upgrade $connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:${o.listen} ssl http2;
    server_name ${o.domain} .${o.domain};
    ssl_certificate ${tmp('leaf.crt')};
    ssl_certificate_key ${tmp('leaf.key')};
    client_max_body_size 0;
    location / {
      proxy_pass http://${o.daemon};
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
`;
}

export async function startTlsFront(daemonUrl: string, domain: string): Promise<TlsFront> {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-tls-'));
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d));
  let nginx: ChildProcess | undefined;
  let relay: Server | undefined;
  const sockets = new Set<Socket>();
  const close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => (relay ? relay.close(() => r()) : r()));
    if (nginx && nginx.exitCode === null) {
      const gone = new Promise((r) => nginx!.once('exit', r));
      nginx.kill('SIGTERM');
      await gone;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2'];
    await runOk('openssl', ['req', '-x509', ...ec, '-subj', '/CN=cordon test TLS front CA', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    await runOk('openssl', ['req', '-x509', ...ec, '-subj', `/CN=${domain}`, '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-keyout', join(dir, 'leaf.key'), '-out', join(dir, 'leaf.crt'), '-addext', `subjectAltName=DNS:${domain},DNS:*.${domain}`]);
    const listen = await freePort();
    writeFileSync(join(dir, 'nginx.conf'), nginxConfig({ dir, listen, domain, daemon: new URL(daemonUrl).host }));
    await runOk('nginx', ['-t', '-q', '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')]);
    nginx = spawn('nginx', ['-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], { stdio: 'ignore' });
    await waitListening(listen, nginx);

    const suffix = `.${domain}:443`;
    relay = createServer((_req, res) => res.writeHead(405).end());
    relay.on('connect', (req, client: Socket, head: Buffer) => {
      sockets.add(client);
      client.on('close', () => sockets.delete(client));
      client.on('error', () => {});
      if (!(req.url ?? '').endsWith(suffix)) return void client.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      const up = connect(listen, '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length) up.write(head);
        up.pipe(client);
        client.pipe(up);
      });
      sockets.add(up);
      up.on('close', () => (sockets.delete(up), client.destroy()));
      up.on('error', () => client.destroy());
    });
    const relayPort = await freePort();
    await new Promise<void>((r) => relay!.listen(relayPort, '127.0.0.1', r));
    return { caFile: join(dir, 'ca.crt'), connectProxy: `http://127.0.0.1:${relayPort}`, close };
  } catch (e) {
    await close();
    throw e;
  }
}

async function waitListening(port: number, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode !== null) throw new Error(`nginx exited (${proc.exitCode})`);
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('nginx did not start listening');
}
