import { S3Client } from '@aws-sdk/client-s3';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A real S3-compatible server (s3rver) in its own process on loopback, with fresh random keys. */
export interface S3Server {
  endpoint: string;
  port: number;
  key: string;
  secret: string;
  dir: string;
  proc: ChildProcess;
  /** An AWS SDK client for it (path-style, checksums only where required). */
  client(endpoint?: string): S3Client;
  stop(): Promise<void>;
}

export async function startS3Server(name: string, buckets: string[]): Promise<S3Server> {
  const dir = `/tmp/cordon-s3-${name}-${process.pid}`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const key = `AKTEST${randomBytes(8).toString('hex').toUpperCase()}`;
  const secret = `sk-${randomBytes(20).toString('hex')}`;
  const main = join(dirname(fileURLToPath(import.meta.url)), 's3rver-main.js');
  const proc = spawn(process.execPath, [main], { env: { ...process.env, S3_KEY: key, S3_SECRET: secret, S3_DIR: dir, S3_BUCKETS: buckets.join(',') }, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /\{"port":(\d+)\}/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.on('exit', (c) => reject(new Error(`s3rver exited with ${c}`)));
    setTimeout(() => reject(new Error('s3rver did not start within 20s')), 20_000).unref();
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint, port, key, secret, dir, proc,
    client: (ep = endpoint) => new S3Client({ endpoint: ep, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key, secretAccessKey: secret }, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' }),
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * An HTTP relay in front of the S3 server that can start failing: after `n` more object PUTs (a whole
 * object or one part) every request is answered by cutting its connection, until `heal()`.
 */
export interface FaultyRelay {
  endpoint: string;
  puts: number;
  failAfterPuts(n: number): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startFaultyRelay(target: string): Promise<FaultyRelay> {
  const t = new URL(target);
  let left = Infinity;
  const relay: FaultyRelay = {
    endpoint: '',
    puts: 0,
    failAfterPuts: (n) => void (left = n),
    heal: () => void (left = Infinity),
    close: () => new Promise((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const isPut = req.method === 'PUT' && !req.url?.startsWith('/?');
    if (left <= 0) return void req.socket.destroy();
    if (isPut) {
      left--;
      relay.puts++;
    }
    const up = request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => req.socket.destroy());
    req.pipe(up);
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  relay.endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return relay;
}
