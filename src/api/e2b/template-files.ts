// The files E2B's Template.copy uploads: one tar(.gz) per files hash, sent with PUT to a URL this
// daemon signs (HMAC of the hash and an expiry, so the request needs no API key and can write only
// that hash), unpacked with the build context's rules (no escape, no device files, size and entry
// bounds) into a cache directory per hash that builds copy from.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, readdir, rename, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { CordonError } from '../../errors/registry.js';
import { extractContext } from '../../image/template-build/context.js';
import { removeTree } from '../../image/template-build/layer-dirs.js';
import { FILES_HASH } from './template-steps.js';

/** Path prefix of upload URLs; the API-key check lets it through (the signature is the credential). */
export const UPLOAD_PREFIX = '/templatefiles/';
const URL_TTL_S = 3600;
/** Uploaded files unused this long are removed (a build needs them only between upload and its COPY). */
const KEEP_MS = 24 * 3600_000;

export interface UploadLimits {
  maxBytes: number;
  maxEntries: number;
}

export class E2bTemplateFiles {
  /** Per daemon run: a restart invalidates outstanding URLs, which expire within the hour anyway. */
  private readonly key = randomBytes(32);
  private readonly tmp: string;

  constructor(
    readonly root: string,
    private readonly limits: UploadLimits,
  ) {
    this.tmp = join(root, 'tmp');
  }

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    await removeTree(this.tmp).catch(() => {});
    await mkdir(this.tmp, { mode: 0o700 });
  }

  private dir(hash: string): string {
    if (!FILES_HASH.test(hash)) throw new CordonError('invalid_argument', 'hash: a sha256 hex digest (64 lowercase hex characters)');
    return join(this.root, hash);
  }

  /** Whether a hash's files are here; a hit is marked used, so the cleanup keeps it. */
  async present(hash: string): Promise<boolean> {
    const d = this.dir(hash);
    if (!existsSync(d)) return false;
    const now = new Date();
    await utimes(d, now, now).catch(() => {});
    return true;
  }

  private sign(hash: string, expires: number): Buffer {
    return createHmac('sha256', this.key).update(`${hash}\n${expires}`).digest();
  }

  /** A URL that accepts one PUT of this hash's tar for the next hour. */
  uploadUrl(origin: string, hash: string): string {
    this.dir(hash);
    const expires = Math.floor(Date.now() / 1000) + URL_TTL_S;
    return `${origin}${UPLOAD_PREFIX}${hash}?expires=${expires}&signature=${this.sign(hash, expires).toString('hex')}`;
  }

  /** Refuses a wrong or expired signature (403): nothing is read or written before this passes. */
  verify(hash: string, expires: number, signature: string): void {
    this.dir(hash);
    const given = /^[a-f0-9]{64}$/.test(signature) ? Buffer.from(signature, 'hex') : Buffer.alloc(0);
    const want = this.sign(hash, expires);
    if (given.length !== want.length || !timingSafeEqual(given, want)) throw new CordonError('permission_denied', 'the upload URL signature is wrong; ask GET /templates/{templateID}/files/{hash} for a new URL');
    if (expires < Date.now() / 1000) throw new CordonError('permission_denied', 'the upload URL has expired; ask GET /templates/{templateID}/files/{hash} for a new one');
  }

  /** Unpack an uploaded tar (gzip or plain) as this hash's files; a failed upload leaves nothing. */
  async receive(hash: string, body: Readable): Promise<void> {
    const final = this.dir(hash);
    const staging = join(this.tmp, `${hash}-${randomBytes(6).toString('hex')}`);
    await mkdir(staging, { mode: 0o700 });
    try {
      // The tar inside may be larger than its gzip: bounded by the content limit plus its headers.
      const maxTar = this.limits.maxBytes + (this.limits.maxEntries + 2) * 1024 + 1024 * 1024;
      await extractContext(bounded(await gunzipMaybe(body), maxTar), staging, this.limits).catch((e: unknown) => {
        if (e instanceof CordonError) throw new CordonError(e.code, e.message.replace(/the build context/g, 'the upload').replace(/ \(cordon serve [^)]*\)/, '').replace(/; add a \.dockerignore/, '; copy fewer files'), e.details);
        throw e;
      });
      // The same hash arriving twice (the SDK uploads in parallel): the first copy stays.
      if (existsSync(final)) return;
      await rename(staging, final).catch((e: NodeJS.ErrnoException) => {
        if (!existsSync(final)) throw e;
      });
    } finally {
      await removeTree(staging).catch(() => {});
    }
  }

  /** Copy the files of `hashes` into a build context, each in a directory named by its hash. */
  async copyInto(hashes: string[], contextDir: string): Promise<void> {
    for (const h of hashes) {
      const src = this.dir(h);
      if (!existsSync(src)) throw new CordonError('invalid_argument', `the files of hash ${h} were never uploaded; upload them with the URL from GET /templates/{templateID}/files/${h}`);
      await cp(src, join(contextDir, h), { recursive: true, verbatimSymlinks: true, preserveTimestamps: false, errorOnExist: true, force: false });
    }
  }

  /** Remove uploads nobody has used for a day. */
  async prune(): Promise<void> {
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      if (!FILES_HASH.test(name)) continue;
      const st = await stat(join(this.root, name)).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > KEEP_MS) await removeTree(join(this.root, name)).catch(() => {});
    }
  }
}

/** Gunzip when the stream starts with gzip's magic bytes; otherwise the bytes as they are. */
async function gunzipMaybe(input: Readable): Promise<Readable> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const pre: Buffer[] = [];
  let head = Buffer.alloc(0);
  while (head.length < 2) {
    const r = await it.next();
    if (r.done) break;
    pre.push(r.value);
    head = Buffer.concat([head, r.value]);
  }
  const rest = Readable.from(
    (async function* () {
      yield* pre;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    })(),
    { objectMode: false },
  );
  if (head[0] !== 0x1f || head[1] !== 0x8b) return rest;
  const gz = createGunzip();
  rest.on('error', (e) => gz.destroy(e));
  return rest.pipe(gz);
}

function bounded(input: Readable, max: number): Readable {
  let n = 0;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      n += chunk.length;
      if (n > max) return cb(new CordonError('payload_too_large', `the upload unpacks to more than ${max} bytes`));
      cb(null, chunk);
    },
  });
  input.on('error', (e) => t.destroy(e));
  return input.pipe(t);
}
