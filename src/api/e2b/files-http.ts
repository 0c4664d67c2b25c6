// envd's plain-HTTP file transfer: GET /files (download) and POST /files (multipart or octet-stream upload).
// Uploads are streamed: each file part goes straight into the sandbox as it arrives, with backpressure
// back to the client's socket, under a per-upload size bound (counted after gzip is undone).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { posix } from 'node:path';
import { pipeline, Transform, type Readable } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { Busboy, type BusboyInstance } from '@fastify/busboy';
import type { LiveSandbox } from '../../engine/live-sandbox.js';
import { stallDeadline } from '../stream-flow.js';
import { CordonError } from '../../errors/registry.js';
import { envdPath, resolveEnvdUser, type EnvdUser, type FileMetadata } from './envd-context.js';
import type { WatcherRegistry } from './filesystem-service.js';

const METADATA_KEY = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,128}$/;
/** Multipart framing limits; file contents are bounded by the upload limit instead. */
const MULTIPART_LIMITS = { parts: 1000, files: 1000, fields: 64, fieldSize: 64 * 1024, headerPairs: 64, headerSize: 16 * 1024 };

export interface FilesCall {
  sandboxId: string;
  live: LiveSandbox;
  url: URL;
  /** User from the Authorization header, when the caller sent one. */
  headerUser?: string;
  maxUploadBytes: number;
  /** A download whose client takes nothing for this long is cut off. */
  writeDeadlineMs: number;
}

export function sendJsonError(res: ServerResponse, status: number, message: string): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ code: status, message }));
}

function metadataFrom(req: IncomingMessage): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (!k.startsWith('x-metadata-') || typeof v !== 'string') continue;
    const key = k.slice('x-metadata-'.length);
    if (!METADATA_KEY.test(key)) throw new CordonError('invalid_argument', `X-Metadata-${key}: keys are HTTP token characters`);
    if (!/^[\x20-\x7e]{0,1024}$/.test(v)) throw new CordonError('invalid_argument', `X-Metadata-${key}: values are up to 1024 printable ASCII characters`);
    out[key] = v;
  }
  return Object.keys(out).length ? out : undefined;
}

/** Passes bytes through until more than `limit` went by, then fails with 413. */
function limited(limit: number): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > limit) cb(new CordonError('payload_too_large', `upload larger than ${limit} bytes (the daemon's --max-upload); split it into smaller files`));
      else cb(null, chunk);
    },
  });
}

/**
 * The request body, un-gzipped when it says so and bounded. A client that goes away mid-upload errors
 * the result, so whatever consumes it stops. The request itself is left alive for the error answer.
 */
function uploadBody(req: IncomingMessage, limit: number): Readable {
  const bound = limited(limit);
  bound.on('error', () => {}); // seen by whoever reads it; never an uncaught error
  if (/\bgzip\b/i.test(String(req.headers['content-encoding'] ?? ''))) {
    const gunzip = createGunzip();
    gunzip.on('error', (e) => bound.destroy(new CordonError('invalid_argument', `Content-Encoding gzip: the body is not valid gzip (${e.message})`)));
    req.pipe(gunzip).pipe(bound);
  } else req.pipe(bound);
  req.on('close', () => {
    if (!req.complete) bound.destroy(new CordonError('invalid_argument', 'the client closed the upload before it ended'));
  });
  return bound;
}

export async function handleFiles(req: IncomingMessage, res: ServerResponse, call: FilesCall, meta: FileMetadata, watchers: WatcherRegistry): Promise<void> {
  try {
    const q = call.url.searchParams;
    const requested = q.get('username') || call.headerUser || undefined;
    const user = await resolveEnvdUser(call.live, requested);
    if (req.method === 'GET') return await download(req, res, call, user, q.get('path'), meta);
    if (req.method === 'POST') return await upload(req, res, call, user, q.get('path'), meta, watchers);
    res.writeHead(405, { allow: 'GET, POST', 'content-type': 'application/json' });
    res.end(JSON.stringify({ code: 405, message: 'use GET to download or POST to upload' }));
  } catch (e) {
    // Unread body bytes would be taken for the next request on this connection: drain, then close it.
    if (!req.complete) {
      req.resume();
      if (!res.headersSent) res.setHeader('connection', 'close');
    }
    const err = e instanceof CordonError ? e : new CordonError('internal', (e as Error).message);
    // envd answers a missing user with 401 and an unusable path with 400.
    const status = err.code === 'invalid_argument' && /^user:/.test(err.message) ? 401 : err.status;
    sendJsonError(res, status, err.message);
  }
}

/**
 * Smaller downloads go out as they are even to a client that accepts gzip (HTTP lets a server choose):
 * compressing a few KiB saves no round trip and costs a compressor's setup and a thread-pool hop.
 */
const GZIP_MIN_BYTES = 8 * 1024;

async function download(req: IncomingMessage, res: ServerResponse, call: FilesCall, user: EnvdUser, rawPath: string | null, meta: FileMetadata) {
  req.resume();
  if (!rawPath) throw new CordonError('invalid_argument', 'path: give the file to download in the path query parameter');
  const path = envdPath(rawPath, user.home);
  // One trip to the sandbox: the read gives the size, and refuses a directory itself.
  const { stream, size, content } = await call.live.files.read(path, user.name);
  const gzip = size >= GZIP_MIN_BYTES && /\bgzip\b/i.test(String(req.headers['accept-encoding'] ?? ''));
  const headers: Record<string, string> = {
    'content-type': 'application/octet-stream',
    'content-disposition': `attachment; filename="${encodeURIComponent(posix.basename(path))}"`,
  };
  for (const [k, v] of Object.entries(meta.get(call.sandboxId, path) ?? {})) headers[`x-metadata-${k}`] = v;
  if (gzip) headers['content-encoding'] = 'gzip';
  // The length of what is sent: a file cut short after the agent's stat came with fewer bytes.
  else headers['content-length'] = String(content ? content.length : size);
  res.writeHead(200, headers);
  if (content && !gzip) {
    // A small file came whole with the answer.
    res.end(content);
    return;
  }
  stallDeadline(res, call.writeDeadlineMs);
  // One pipeline from the helper's output: a client that leaves destroys it, which ends the helper.
  await (gzip ? pipelineAsync(stream, createGzip(), res) : pipelineAsync(stream, res)).catch(() => res.destroy());
}

/** The written-file entries envd answers with. */
const written = (path: string, metadata?: Record<string, string>) => ({ name: posix.basename(path), type: 'file' as const, path, ...(metadata ? { metadata } : {}) });

async function upload(req: IncomingMessage, res: ServerResponse, call: FilesCall, user: EnvdUser, rawPath: string | null, meta: FileMetadata, watchers: WatcherRegistry) {
  const metadata = metadataFrom(req);
  const ct = String(req.headers['content-type'] ?? '').toLowerCase();
  const results: ReturnType<typeof written>[] = [];
  const put = async (target: string, data: Readable) => {
    const path = envdPath(target, user.home);
    if (results.some((r) => r.path === path)) {
      throw new CordonError('invalid_argument', `you cannot upload multiple files to the same path '${path}' in one upload request, only the first specified file was uploaded`);
    }
    // As envd: missing parents are created for the user even where the user could not create them.
    await call.live.files.write(path, data, { user: user.name, ownParents: true });
    meta.set(call.sandboxId, path, metadata);
    results.push(written(path, metadata));
    await watchers.settle(call.sandboxId, [path]);
  };
  if (ct.startsWith('application/octet-stream')) {
    if (!rawPath) throw new CordonError('invalid_argument', 'path: an octet-stream upload needs the destination in the path query parameter');
    await put(rawPath, uploadBody(req, call.maxUploadBytes));
  } else if (ct.startsWith('multipart/')) {
    await multipart(req, call.maxUploadBytes, (filename, stream) => {
      // envd: the path query parameter wins over the part's filename.
      const target = rawPath || filename;
      if (!target) throw new CordonError('invalid_argument', 'each "file" part needs a filename (its destination path) or a path query parameter');
      return put(target, stream);
    });
  } else {
    throw new CordonError('invalid_argument', `unsupported content type: ${ct || '(none)'}, expected multipart/form-data or application/octet-stream`);
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(results));
}

/**
 * Stream every part named "file" (with or without a filename) to `onFile`, one after the other;
 * other parts are ignored, as envd does. Resolves when the body is fully read and every file written.
 */
function multipart(req: IncomingMessage, limit: number, onFile: (filename: string | undefined, stream: Readable) => Promise<void>): Promise<void> {
  return new Promise((resolve, reject) => {
    let bb: BusboyInstance;
    try {
      bb = Busboy({ headers: req.headers as { 'content-type': string }, preservePath: true, isPartAFile: (name) => name === 'file', limits: MULTIPART_LIMITS });
    } catch (e) {
      return reject(new CordonError('invalid_argument', `Content-Type: ${(e as Error).message}; send multipart/form-data with a boundary`));
    }
    let failed = false;
    let current: Readable | undefined;
    let writes = Promise.resolve();
    const fail = (e: unknown) => {
      if (failed) return;
      failed = true;
      current?.destroy(e as Error);
      bb.destroy();
      reject(e instanceof CordonError ? e : new CordonError('invalid_argument', `multipart body could not be read: ${(e as Error).message}`));
    };
    bb.on('file', (_field, stream, filename) => {
      stream.on('error', () => {}); // reported through the write that reads it
      writes = writes.then(async () => {
        if (failed) return void stream.resume();
        current = stream;
        await onFile(filename || undefined, stream);
        current = undefined;
      }).catch(fail);
    });
    bb.on('field', () => {});
    // Past a framing limit busboy silently drops the rest: refuse instead of writing only part of the upload.
    const tooMany = (what: string, n: number) => () => fail(new CordonError('payload_too_large', `multipart body has more than ${n} ${what}; split the upload into several requests`));
    bb.on('partsLimit', tooMany('parts', MULTIPART_LIMITS.parts));
    bb.on('filesLimit', tooMany('files', MULTIPART_LIMITS.files));
    bb.on('fieldsLimit', tooMany('fields', MULTIPART_LIMITS.fields));
    bb.on('error', fail);
    bb.on('finish', () => void writes.then(() => !failed && resolve(), fail));
    pipeline(uploadBody(req, limit), bb, (e) => e && fail(e));
  });
}
