// The Connect protocol (connectrpc.com/docs/protocol), JSON codec only, over plain HTTP/1.1.
// Hand-rolled rather than @connectrpc/connect-node: the E2B SDK only ever speaks JSON, the
// messages are few and small, and owning the framing lets requests be validated with zod and
// routed by E2B's headers inside one Fastify onRequest hook without descriptor machinery.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createGunzip, gunzipSync } from 'node:zlib';
import type { FlowLimits } from '../../engine/output-fanout.js';
import { CordonError, type ConnectCode } from '../../errors/registry.js';
import { responseFlow, type TransportFlow } from '../stream-flow.js';

export type Json = Record<string, unknown>;

export interface RpcContext {
  /** Aborts when the client goes away or the Connect-Timeout-Ms deadline passes. */
  signal: AbortSignal;
  /** Epoch ms of the deadline, when the client set one. */
  deadline?: number;
  headers: IncomingMessage['headers'];
}

/**
 * How a server-streaming handler writes. Every stream is bounded: one whose client leaves more than
 * the high-water mark unread past the write deadline, or twice the mark at any time, is cut off.
 * Handlers whose source can wait (process output) use backlog/onDrain to pause it before that.
 */
export interface StreamSender extends TransportFlow {
  (msg: Json): void;
}

export type MethodDef =
  | { kind: 'unary'; handle: (req: Json, ctx: RpcContext) => Promise<Json> }
  | {
      kind: 'server_stream';
      handle: (req: Json, ctx: RpcContext, send: StreamSender) => Promise<void>;
      /** The message sent every Keepalive-Ping-Interval seconds while the stream is quiet. */
      keepalive?: Json;
    }
  | { kind: 'client_stream'; handle: (reqs: AsyncIterable<Json>, ctx: RpcContext) => Promise<Json> };

/** Connect's code → HTTP status table, for unary errors. */
const HTTP_STATUS: Record<ConnectCode, number> = {
  canceled: 499,
  invalid_argument: 400,
  deadline_exceeded: 504,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  resource_exhausted: 429,
  failed_precondition: 400,
  aborted: 409,
  unimplemented: 501,
  internal: 500,
  unavailable: 503,
  unauthenticated: 401,
};

export class RpcError extends Error {
  constructor(readonly code: ConnectCode, message: string) {
    super(message);
  }
}

/**
 * Thrown by a streaming handler whose stream must end as a dropped connection, with no end-of-stream
 * message: what a client of E2B sees when the sandbox behind the stream is killed.
 */
export class StreamDropped extends Error {}

const DEFAULT_FLOW: FlowLimits = { highWaterBytes: 8 * 1024 * 1024, writeDeadlineMs: 60_000 };

function toRpcError(e: unknown): RpcError {
  if (e instanceof RpcError) return e;
  if (e instanceof CordonError) return new RpcError(e.connectCode, e.message);
  return new RpcError('internal', (e as Error)?.message ?? String(e));
}

const MAX_MESSAGE = 16 * 1024 * 1024;

const tooLarge = (limit: number) => new RpcError('resource_exhausted', `request message larger than ${limit} bytes`);

/** A unary body, decompressed when gzip'd; both the bytes read and the bytes they inflate to are capped. */
async function readBody(req: IncomingMessage, limit = MAX_MESSAGE): Promise<Buffer> {
  let raw = 0;
  const gzip = /gzip/i.test(String(req.headers['content-encoding'] ?? '')) ? createGunzip() : undefined;
  if (gzip) {
    req.on('data', (c: Buffer) => {
      raw += c.length;
      if (raw > limit) gzip.destroy(tooLarge(limit));
    });
    req.pipe(gzip);
  }
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of gzip ?? req) {
    n += (c as Buffer).length;
    if (n > limit) {
      gzip?.destroy();
      throw tooLarge(limit);
    }
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

function parseJson(buf: Buffer): Json {
  let v: unknown;
  try {
    v = buf.length ? JSON.parse(buf.toString('utf8')) : {};
  } catch (e) {
    throw new RpcError('invalid_argument', `request is not valid JSON: ${(e as Error).message}`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new RpcError('invalid_argument', 'request message must be a JSON object');
  return v as Json;
}

/** Split a Connect streaming body into its enveloped messages (flags byte + big-endian length). */
async function* envelopes(req: IncomingMessage): AsyncGenerator<Json> {
  let parts: Buffer[] = [];
  let size = 0;
  const compressed = /gzip/i.test(String(req.headers['connect-content-encoding'] ?? ''));
  for await (const c of req) {
    parts.push(c as Buffer);
    size += (c as Buffer).length;
    while (size >= 5) {
      if (parts[0].length < 5) parts = [Buffer.concat(parts, size)];
      const flags = parts[0][0];
      const len = parts[0].readUInt32BE(1);
      if (len > MAX_MESSAGE) throw tooLarge(MAX_MESSAGE);
      if (size < 5 + len) break;
      const all = parts.length === 1 ? parts[0] : Buffer.concat(parts, size);
      let payload = all.subarray(5, 5 + len);
      parts = [all.subarray(5 + len)];
      size -= 5 + len;
      if (flags & 0x02) return; // end-of-stream from the client
      if (flags & 0x01) {
        if (!compressed) throw new RpcError('internal', 'compressed message without Connect-Content-Encoding');
        try {
          payload = gunzipSync(payload, { maxOutputLength: MAX_MESSAGE });
        } catch (e) {
          throw (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? tooLarge(MAX_MESSAGE) : new RpcError('invalid_argument', `message is not valid gzip: ${(e as Error).message}`);
        }
      }
      yield parseJson(payload);
    }
  }
  if (size) throw new RpcError('invalid_argument', 'request body ends inside a message envelope');
}

function envelope(flags: number, msg: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(msg));
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** Connect-Timeout-Ms: at most 10 digits of milliseconds. */
function parseTimeout(h: string | string[] | undefined): number | undefined {
  if (typeof h !== 'string') return undefined;
  if (!/^\d{1,10}$/.test(h)) throw new RpcError('invalid_argument', `Connect-Timeout-Ms must be a positive integer of at most 10 digits, got "${h}"`);
  return Number(h);
}

/** Keepalive-Ping-Interval is in seconds (the SDK sends 50). */
function parseKeepalive(h: string | string[] | undefined): number | undefined {
  if (typeof h !== 'string' || !/^\d{1,6}$/.test(h) || Number(h) === 0) return undefined;
  return Number(h) * 1000;
}

function unaryError(res: ServerResponse, e: RpcError): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(HTTP_STATUS[e.code], { 'content-type': 'application/json' });
  res.end(JSON.stringify({ code: e.code, message: e.message }));
}

/** Serve one RPC on a raw request: content-type checks, deadline, framing, errors. */
export async function serveRpc(req: IncomingMessage, res: ServerResponse, method: MethodDef | undefined, flow: FlowLimits = DEFAULT_FLOW): Promise<void> {
  const streaming = method ? method.kind !== 'unary' : /^application\/connect\+/.test(String(req.headers['content-type']));
  const fail = (e: RpcError) => {
    if (!streaming) return unaryError(res, e);
    if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/connect+json' });
    res.end(envelope(0x02, { error: { code: e.code, message: e.message } }));
  };
  if (req.method !== 'POST') {
    res.writeHead(405, { allow: 'POST', 'content-type': 'application/json' });
    return void res.end(JSON.stringify({ code: 'unimplemented', message: 'Connect RPCs are called with POST' }));
  }
  if (!method) return fail(new RpcError('unimplemented', `no such RPC ${req.url?.split('?')[0]}`));
  const ct = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  const want = streaming ? 'application/connect+json' : 'application/json';
  if (ct !== want) {
    res.writeHead(415, { 'content-type': 'application/json', 'accept-post': want });
    return void res.end(JSON.stringify({ code: 'internal', message: `cordon's envd speaks the Connect JSON codec only: send Content-Type ${want}` }));
  }

  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let deadline: number | undefined;
  try {
    const timeoutMs = parseTimeout(req.headers['connect-timeout-ms']);
    if (timeoutMs !== undefined) {
      deadline = Date.now() + timeoutMs;
      timer = setTimeout(() => ac.abort(new RpcError('deadline_exceeded', `the deadline of ${timeoutMs} ms passed`)), timeoutMs);
    }
  } catch (e) {
    return fail(toRpcError(e));
  }
  res.on('close', () => {
    if (!res.writableFinished) ac.abort(new RpcError('canceled', 'the client went away'));
  });
  const ctx: RpcContext = { signal: ac.signal, deadline, headers: req.headers };
  const aborted = new Promise<never>((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true }));
  aborted.catch(() => {});

  try {
    if (method.kind === 'unary') {
      const out = await Promise.race([readBody(req).then(parseJson).then((m) => method.handle(m, ctx)), aborted]);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(out));
    } else if (method.kind === 'client_stream') {
      const out = await Promise.race([method.handle(envelopes(req), ctx), aborted]);
      res.writeHead(200, { 'content-type': 'application/connect+json' });
      res.write(envelope(0, out));
      res.end(envelope(0x02, {}));
    } else {
      let first: Json | undefined;
      for await (const m of envelopes(req)) {
        first = m;
        break;
      }
      if (!first) throw new RpcError('invalid_argument', 'server-streaming call without a request message');
      res.writeHead(200, { 'content-type': 'application/connect+json' });
      res.flushHeaders();
      let lastSent = Date.now();
      const send = boundedSender(res, flow, (msg) => {
        if (res.writableEnded || ac.signal.aborted) return;
        lastSent = Date.now();
        res.write(envelope(0, msg));
      });
      const every = parseKeepalive(req.headers['keepalive-ping-interval']);
      const ping = every && method.keepalive ? setInterval(() => Date.now() - lastSent >= every - 50 && send(method.keepalive!), every) : undefined;
      try {
        await Promise.race([method.handle(first, ctx, send), aborted]);
      } finally {
        if (ping) clearInterval(ping);
      }
      if (!res.writableEnded) res.end(envelope(0x02, {}));
    }
  } catch (e) {
    if (e instanceof StreamDropped) return void res.destroy();
    const err = toRpcError(e);
    if (err.code === 'canceled' && res.destroyed) return;
    fail(err);
  } finally {
    if (timer) clearTimeout(timer);
    if (!ac.signal.aborted) ac.abort(new RpcError('canceled', 'the call finished'));
  }
}

/** A stream writer that cuts the response off when its client stops reading (see StreamSender). */
function boundedSender(res: ServerResponse, flow: FlowLimits, write: (msg: Json) => void): StreamSender {
  const transport = responseFlow(res);
  let deadline: NodeJS.Timeout | undefined;
  const send = (msg: Json) => {
    write(msg);
    const backlog = res.writableLength;
    if (backlog > 2 * flow.highWaterBytes) return void res.destroy();
    if (backlog <= flow.highWaterBytes || deadline) return;
    deadline = setTimeout(() => res.destroy(), flow.writeDeadlineMs);
    deadline.unref();
    transport.onDrain(() => {
      clearTimeout(deadline);
      deadline = undefined;
    });
  };
  res.once('close', () => clearTimeout(deadline));
  return Object.assign(send, { backlog: transport.backlog, onDrain: transport.onDrain });
}
