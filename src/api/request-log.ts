// One structured line per API request, and the request id that ties a client's error to that line.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Writable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { pino, type Logger } from 'pino';
import type { LogLevel } from '../config.js';

/** An incoming X-Request-Id is kept when it is this tame (a proxy's id, a UUID); otherwise a new one is made. */
const CLIENT_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Random bytes for request ids, drawn a few hundred ids at a time: one call into the system's random
 * source per request cost about as much as routing it.
 */
const idPool = { bytes: Buffer.alloc(0), at: 0 };
const ID_POOL_BYTES = 4096;

function randomHex8(): string {
  if (idPool.at + 8 > idPool.bytes.length) {
    idPool.bytes = randomBytes(ID_POOL_BYTES);
    idPool.at = 0;
  }
  const hex = idPool.bytes.toString('hex', idPool.at, idPool.at + 8);
  idPool.at += 8;
  return hex;
}

/** Fastify's genReqId: the client's X-Request-Id when sane, else 16 random hex digits. */
export function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && CLIENT_ID.test(given) ? given : randomHex8();
}

/** Query parameters whose values are credentials (signed URLs, tokens) and never reach a log. */
const SECRET_PARAM = /token|signature|secret|passw|key|auth|credential|session/i;

/** The URL as logged: secret query values replaced, at most 2 KiB. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url.slice(0, 2048);
  const params = url
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        /* a malformed name is judged as written */
      }
      return eq >= 0 && SECRET_PARAM.test(decoded) ? `${name}=[REDACTED]` : pair;
    });
  return `${url.slice(0, q)}?${params.join('&')}`.slice(0, 2048);
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };

/** Human-readable lines for a terminal; everything else gets pino's JSON. */
function prettyStream(out: NodeJS.WriteStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      try {
        const o = JSON.parse(chunk.toString('utf8')) as Record<string, unknown>;
        const time = String(o.time ?? '').slice(11, 23);
        const head = o.msg === 'request' ? `${o.method} ${o.url} ${o.status} ${o.duration_ms}ms` : String(o.msg ?? '');
        const extra = Object.entries(o)
          .filter(([k]) => !['time', 'level', 'msg', 'method', 'url', 'status', 'duration_ms', 'pid'].includes(k))
          .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
          .join(' ');
        out.write(`${time} ${LEVEL_NAMES[Number(o.level)] ?? o.level} ${head}${extra ? `  ${extra}` : ''}\n`);
      } catch {
        out.write(chunk);
      }
      done();
    },
  });
}

/**
 * JSON lines are written in batches of this many bytes, or after LOG_FLUSH_MS: a write per request
 * woke a thread-pool thread and the log's reader (journald, a pipe) on every request, which on a
 * small host cost a busy daemon more than routing the request. Pending lines are flushed at exit.
 */
const LOG_BATCH_BYTES = 4096;
const LOG_FLUSH_MS = 100;

/** The daemon's logger: JSON lines on stdout, or pretty ones when stdout is a terminal. */
export function createLogger(level: LogLevel, out: NodeJS.WriteStream & { fd?: number } = process.stdout): Logger {
  const opts = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (out.isTTY) return pino(opts, prettyStream(out));
  return pino(opts, pino.destination({ dest: out.fd ?? 1, sync: false, minLength: LOG_BATCH_BYTES, periodicFlush: LOG_FLUSH_MS }));
}

export interface RequestObserver {
  httpRequest(method: string, route: string, status: number, seconds: number): void;
}

/**
 * Every request gets its id back as X-Request-Id, and in any JSON error body as `request_id`
 * (E2B's `{code, message}` keeps its shape). With `log`, one line per request once its response
 * is done (also for hijacked ones: envd, proxied ports, streams); headers are never logged.
 */
export function registerRequestLog(app: FastifyInstance, opts: { log?: Logger; observer?: RequestObserver }): void {
  const { log, observer } = opts;
  app.addHook('onRequest', (req, reply, done) => {
    reply.raw.setHeader('x-request-id', req.id);
    if (log || observer) {
      const started = performance.now();
      reply.raw.once('close', () => finished(req, reply, started, log, observer));
    }
    done();
  });
  app.addHook('onSend', (req, reply, payload, done) => {
    // Error bodies are small; anything else (or a large body) is sent untouched rather than parsed.
    if (reply.statusCode < 400 || typeof payload !== 'string' || payload.length > 65_536 || !String(reply.getHeader('content-type') ?? '').startsWith('application/json')) {
      return done(null, payload);
    }
    try {
      const body = JSON.parse(payload) as unknown;
      if (body && typeof body === 'object' && !Array.isArray(body)) {
        const o = body as Record<string, unknown>;
        if (typeof o.code === 'string' || typeof o.code === 'number') (req as FastifyRequest & { errorCode?: string }).errorCode = String(o.code);
        if (o.request_id === undefined) return done(null, JSON.stringify({ ...o, request_id: req.id }));
      }
    } catch {
      /* not JSON after all: sent as it is */
    }
    done(null, payload);
  });
}

function finished(req: FastifyRequest, reply: FastifyReply, started: number, log: Logger | undefined, observer: RequestObserver | undefined): void {
  const seconds = (performance.now() - started) / 1000;
  const status = reply.raw.statusCode;
  const route = req.routeOptions?.url ?? 'unmatched';
  observer?.httpRequest(req.method, route, status, seconds);
  if (!log) return;
  const params = (req.params ?? {}) as Record<string, unknown>;
  const sandbox = params.id ?? params.sandboxID;
  const line: Record<string, unknown> = {
    request_id: req.id,
    method: req.method,
    url: redactUrl(req.url),
    route,
    status,
    duration_ms: Math.round(seconds * 100_000) / 100,
    remote: req.ip,
  };
  if (typeof sandbox === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(sandbox)) line.sandbox_id = sandbox;
  const code = (req as FastifyRequest & { errorCode?: string }).errorCode;
  if (code) line.error = code;
  if (req.headers.upgrade) line.upgrade = String(req.headers.upgrade).slice(0, 32);
  else if (!reply.raw.writableFinished) line.aborted = true;
  if (status >= 500) log.error(line, 'request');
  else log.info(line, 'request');
}
