import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';
import { Decompress as FzstdDecompress } from 'fzstd';

// Layers come gzip'd, zstd'd or plain. We sniff the magic bytes rather than trust the media type,
// so a mislabelled layer still unpacks (its digest is what we check).

const GZIP = Buffer.from([0x1f, 0x8b]);
const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** Node ≥ 22.15 has native zstd; older ones use fzstd (pure JS, no native build needed). */
function zstdStream(): Transform {
  const native = (zlib as unknown as { createZstdDecompress?: () => Transform }).createZstdDecompress;
  if (native) return native();
  let out: Transform;
  const dec = new FzstdDecompress((chunk) => {
    if (chunk.length) out.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  });
  out = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      try {
        dec.push(new Uint8Array(chunk));
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
    flush(cb) {
      try {
        dec.push(new Uint8Array(0), true);
        cb();
      } catch (e) {
        cb(e as Error);
      }
    },
  });
  return out;
}

/** Decompresses whatever the first bytes say the stream is. */
export class AutoDecompress extends Transform {
  private inner?: Transform;
  private head = Buffer.alloc(0);
  private flushCb?: TransformCallback;

  _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.inner) {
      if (!this.inner.write(chunk)) this.inner.once('drain', () => cb());
      else cb();
      return;
    }
    this.head = Buffer.concat([this.head, chunk]);
    if (this.head.length < 4) return cb();
    this.start();
    const h = this.head;
    this.head = Buffer.alloc(0);
    if (!this.inner!.write(h)) this.inner!.once('drain', () => cb());
    else cb();
  }

  private start(): void {
    const h = this.head;
    if (h.subarray(0, 2).equals(GZIP)) this.inner = zlib.createGunzip();
    else if (h.subarray(0, 4).equals(ZSTD)) this.inner = zstdStream();
    else this.inner = new Transform({ transform: (c, _e, cb) => cb(null, c) });
    this.inner.on('data', (d: Buffer) => this.push(d));
    this.inner.on('error', (e) => this.destroy(new Error(`layer does not decompress: ${e.message}`)));
    this.inner.on('end', () => this.flushCb?.());
  }

  _flush(cb: TransformCallback): void {
    if (!this.inner) this.start();
    if (this.head.length) this.inner!.write(this.head);
    this.flushCb = cb;
    this.inner!.end();
  }
}

/** Passes bytes through while hashing and counting them. */
export class HashTap extends Transform {
  readonly hash: Hash = createHash('sha256');
  bytes = 0;
  constructor(private readonly onBytes?: (n: number) => void) {
    super();
  }
  _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(chunk.length);
    cb(null, chunk);
  }
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}
