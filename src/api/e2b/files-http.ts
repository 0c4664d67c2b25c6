// envd's plain-HTTP file transfer: GET /files (download) and POST /files (multipart or octet-stream upload).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { posix } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type { LiveSandbox } from '../../engine/live-sandbox.js';
import { CordonError } from '../../errors/registry.js';
import { E2B_USER, envdPath, resolveEnvdUser, type FileMetadata } from './envd-context.js';

/** Multipart bodies are parsed in memory; larger uploads should use octet-stream (SDK: useOctetStream). */
const MULTIPART_LIMIT = 256 * 1024 * 1024;
const METADATA_KEY = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,128}$/;

export interface FilesCall {
  sandboxId: string;
  live: LiveSandbox;
  url: URL;
  /** User from the Authorization header, when the caller sent one. */
  headerUser?: string;
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

function limited(limit: number): Transform {
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > limit) cb(new CordonError('payload_too_large', `multipart body larger than ${limit} bytes; upload with Content-Type application/octet-stream instead`));
      else cb(null, chunk);
    },
  });
}

export async function handleFiles(req: IncomingMessage, res: ServerResponse, call: FilesCall, meta: FileMetadata): Promise<void> {
  try {
    const q = call.url.searchParams;
    const requested = q.get('username') || call.headerUser || undefined;
    const user = await resolveEnvdUser(call.live, requested === E2B_USER ? undefined : requested);
    if (req.method === 'GET') return await download(req, res, call, user, q.get('path'), meta);
    if (req.method === 'POST') return await upload(req, res, call, user, q.get('path'), meta);
    res.writeHead(405, { allow: 'GET, POST', 'content-type': 'application/json' });
    res.end(JSON.stringify({ code: 405, message: 'use GET to download or POST to upload' }));
  } catch (e) {
    req.resume();
    const err = e instanceof CordonError ? e : new CordonError('internal', (e as Error).message);
    // envd answers a missing user with 401 and an unusable path with 400.
    const status = err.code === 'invalid_argument' && /^user:/.test(err.message) ? 401 : err.status;
    sendJsonError(res, status, err.message);
  }
}

async function download(req: IncomingMessage, res: ServerResponse, call: FilesCall, user: { name: string; home: string }, rawPath: string | null, meta: FileMetadata) {
  req.resume();
  if (!rawPath) throw new CordonError('invalid_argument', 'path: give the file to download in the path query parameter');
  const path = envdPath(rawPath, user.home);
  const info = await call.live.files.stat(path, user.name);
  if (info.type === 'dir') throw new CordonError('invalid_argument', `path ${path} is a directory, not a file`);
  const { stream } = await call.live.files.read(path, user.name);
  const gzip = /\bgzip\b/i.test(String(req.headers['accept-encoding'] ?? ''));
  const headers: Record<string, string> = {
    'content-type': 'application/octet-stream',
    'content-disposition': `attachment; filename="${encodeURIComponent(posix.basename(path))}"`,
  };
  for (const [k, v] of Object.entries(meta.get(call.sandboxId, path) ?? {})) headers[`x-metadata-${k}`] = v;
  if (gzip) headers['content-encoding'] = 'gzip';
  else headers['content-length'] = String(info.size);
  res.writeHead(200, headers);
  await pipeline(gzip ? stream.pipe(createGzip()) : stream, res).catch(() => res.destroy());
}

/** The written-file entries envd answers with. */
const written = (path: string, metadata?: Record<string, string>) => ({ name: posix.basename(path), type: 'file' as const, path, ...(metadata ? { metadata } : {}) });

async function upload(req: IncomingMessage, res: ServerResponse, call: FilesCall, user: { name: string; home: string }, rawPath: string | null, meta: FileMetadata) {
  const metadata = metadataFrom(req);
  const ct = String(req.headers['content-type'] ?? '').toLowerCase();
  const results: ReturnType<typeof written>[] = [];
  const put = async (target: string, data: Readable | Buffer) => {
    const path = envdPath(target, user.home);
    await call.live.files.write(path, data, { user: user.name });
    meta.set(call.sandboxId, path, metadata);
    results.push(written(path, metadata));
  };
  if (ct.startsWith('application/octet-stream')) {
    if (!rawPath) throw new CordonError('invalid_argument', 'path: an octet-stream upload needs the destination in the path query parameter');
    const gz = /gzip/i.test(String(req.headers['content-encoding'] ?? ''));
    const body = gz ? req.pipe(createGunzip()) : req;
    await put(rawPath, body);
  } else if (ct.startsWith('multipart/form-data')) {
    const web = new Request('http://envd/files', {
      method: 'POST',
      headers: { 'content-type': String(req.headers['content-type']) },
      body: Readable.toWeb(req.pipe(limited(MULTIPART_LIMIT))) as ReadableStream,
      duplex: 'half',
    } as RequestInit);
    const form = await web.formData().catch((e: Error) => {
      throw e instanceof CordonError ? e : new CordonError('invalid_argument', `multipart body could not be parsed: ${e.message}`);
    });
    const parts = form.getAll('file').filter((p): p is File => typeof p !== 'string');
    if (!parts.length) throw new CordonError('invalid_argument', 'multipart body has no "file" part');
    for (const part of parts) {
      const target = parts.length === 1 && rawPath ? rawPath : part.name || rawPath;
      if (!target) throw new CordonError('invalid_argument', 'each file part needs a filename (its destination path) or a path query parameter');
      await put(target, Buffer.from(await part.arrayBuffer()));
    }
  } else {
    req.resume();
    throw new CordonError('invalid_argument', 'Content-Type: upload as multipart/form-data or application/octet-stream');
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(results));
}
