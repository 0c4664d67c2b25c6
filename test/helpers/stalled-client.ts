import http, { type IncomingMessage } from 'node:http';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

// Clients that read a stream and then stop reading (TCP backpressure all the way to the daemon),
// and a reader of the daemon's resident memory.

/** Resident memory of a process in bytes (VmRSS of /proc/PID/status). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

export interface StalledStream {
  /** Bytes taken from the socket so far. */
  received(): number;
  /** The text received before the client stopped reading. */
  head: string;
  /**
   * Whether the connection has ended. A paused client only sees the daemon's close once it reads
   * what was already in its socket, so call resume() first.
   */
  closed(): boolean;
  /** Read (and drop) what comes, from now on. */
  resume(): void;
  stop(): void;
}

/**
 * Send an HTTP request whose response is a stream, read until `ready` says so, then stop reading:
 * the socket is paused, its receive buffer fills and the daemon's writes back up.
 */
export function stallHttp(url: string, opts: { method: string; headers: Record<string, string>; body?: Buffer | string; ready: (text: string) => boolean }): Promise<StalledStream> {
  return new Promise((resolve, reject) => {
    let n = 0;
    let closed = false;
    let head = '';
    const req = http.request(url, { method: opts.method, headers: opts.headers }, (res: IncomingMessage) => {
      if (res.statusCode !== 200) {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${body}`)));
        return;
      }
      const onData = (c: Buffer) => {
        n += c.length;
        head += c.toString('latin1');
        if (!opts.ready(head)) return;
        res.off('data', onData);
        res.pause();
        resolve({
          received: () => n,
          head,
          closed: () => closed,
          resume: () => {
            res.on('data', (c: Buffer) => (n += c.length));
            res.resume();
          },
          stop: () => req.destroy(),
        });
      };
      res.on('data', onData);
      res.on('close', () => (closed = true));
      res.on('error', () => (closed = true));
    });
    req.on('error', (e) => {
      closed = true;
      reject(e);
    });
    req.end(opts.body);
  });
}

/** One Connect envelope (flags 0) around a JSON message. */
export function envelope(msg: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(msg));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** A WebSocket whose reading can be paused and resumed (ws pauses the underlying socket). */
export function openSocket(url: string, first: unknown, onMessage: (text: string) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('message', (raw) => onMessage(raw.toString()));
    ws.on('open', () => {
      ws.send(JSON.stringify(first));
      resolve(ws);
    });
    ws.on('error', reject);
  });
}
