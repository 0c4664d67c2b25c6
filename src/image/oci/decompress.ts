import { createHash, type Hash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as zlib from 'node:zlib';
import { Decompress as FzstdDecompress } from 'fzstd';
import { LayerTooLargeError } from './layer-limits.js';
import { ZstdFrameWalker } from './zstd-frames.js';

// Layers come gzip'd, zstd'd or plain. We sniff the magic bytes rather than trust the media type,
// so a mislabelled layer still unpacks (its digest is what we check). Decompressed bytes are pulled by
// the consumer, never pushed ahead of it, so a compression bomb costs at most a few buffers of memory,
// and they are counted so it stops at the daemon's limit.

/** Bytes decompression may run ahead of the unpacker, so that reading and decoding overlap with writing files. */
export const READ_AHEAD_BYTES = 1024 * 1024;
// zlib streams pass stream options on to Transform, though ZlibOptions does not list them.
const READ_AHEAD = { readableHighWaterMark: READ_AHEAD_BYTES } as zlib.ZlibOptions;
const GZIP = Buffer.from([0x1f, 0x8b]);
const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

export interface DecompressOptions {
  /** Stop with a LayerTooLargeError once more than this many bytes came out. */
  maxBytes?: number;
  /** What the stream is, for that error ("layer", "archive"). */
  what?: string;
}

/** Decompress whatever the first bytes say the stream is (gzip, zstd, or nothing). */
export async function* decompress(input: AsyncIterable<Buffer>, opts: DecompressOptions = {}): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  let sourceError: unknown;
  const next = () =>
    it.next().catch((e: unknown) => {
      sourceError = e;
      throw e;
    });
  let head = Buffer.alloc(0);
  let ended = false;
  while (head.length < 4 && !ended) {
    const r = await next();
    if (r.done) ended = true;
    else head = Buffer.concat([head, r.value]);
  }
  const source = (async function* () {
    if (head.length) yield head;
    if (ended) return;
    for (let r = await next(); !r.done; r = await next()) yield r.value;
  })();
  const decoded = head.subarray(0, 2).equals(GZIP) ? viaStream(zlib.createGunzip(READ_AHEAD), source) : head.subarray(0, 4).equals(ZSTD) ? zstd(source) : source;
  const max = opts.maxBytes ?? Infinity;
  let total = 0;
  try {
    for await (const chunk of decoded) {
      total += chunk.length;
      if (total > max) throw new LayerTooLargeError('bytes', max, opts.what);
      yield chunk;
    }
  } catch (e) {
    if (e === sourceError || e instanceof LayerTooLargeError) throw e;
    throw new Error(`${opts.what ?? 'layer'} does not decompress: ${(e as Error).message}`);
  } finally {
    void it.return?.()?.catch(() => {});
  }
}

/** The output of a Node decompression stream, read only as fast as our consumer reads. */
async function* viaStream(decoder: Transform, source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  pipeline(Readable.from(source), decoder).catch(() => {}); // a failure destroys the decoder, which ends the loop below with it
  try {
    yield* decoder;
  } finally {
    decoder.destroy();
  }
}

/** Node ≥ 22.15 has native zstd; older ones use fzstd (pure JS), fed one block at a time. */
function zstd(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const native = (zlib as unknown as { createZstdDecompress?: (o: object) => Transform }).createZstdDecompress;
  return native ? viaStream(native(READ_AHEAD), source) : zstdInJs(source);
}

async function* zstdInJs(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const walker = new ZstdFrameWalker();
  let out: Buffer[] = [];
  const dec = new FzstdDecompress((c) => {
    if (c.length) out.push(Buffer.from(c)); // a copy: fzstd may hand out views of its window
  });
  for await (const chunk of source) {
    for (let off = 0; off < chunk.length; ) {
      const n = walker.take(chunk, off);
      dec.push(chunk.subarray(off, off + n));
      off += n;
      const ready = out;
      out = [];
      yield* ready;
    }
  }
  walker.end();
  dec.push(new Uint8Array(0), true);
  yield* out;
}

/** A readable of `decompress(input)`, for callers that want a stream. */
export function decompressed(input: Readable, opts: DecompressOptions = {}): Readable {
  return Readable.from(decompress(input, opts), { objectMode: false });
}

/** Passes bytes through while hashing and counting them. */
export class HashTap extends Transform {
  readonly hash: Hash = createHash('sha256');
  bytes = 0;
  constructor(private readonly onBytes?: (n: number) => void, bufferBytes?: number) {
    super(bufferBytes ? { writableHighWaterMark: bufferBytes } : {});
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
