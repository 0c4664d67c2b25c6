// Walks the frame and block structure of a zstd stream (RFC 8878) without decoding it, so the pure-JS
// decoder used on Node < 22.15 can be fed one block at a time and never meets a frame that asks for a
// huge window: fzstd allocates the window a frame header asks for (up to 2 GiB) and decodes every block
// of an input chunk at once (a few KiB of RLE blocks become hundreds of MiB).

/** libzstd's default limit for decoding (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27), which native zstd applies too. */
export const MAX_WINDOW_BYTES = 1 << 27;
const MAX_BLOCK_BYTES = 128 * 1024;
const FRAME_MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

export class ZstdFormatError extends Error {}

type State =
  | { at: 'magic' }
  | { at: 'descriptor' }
  | { at: 'header'; need: number; singleSegment: boolean; checksum: boolean; dictBytes: number; fcsBytes: number }
  | { at: 'blockHeader'; checksum: boolean }
  | { at: 'skip'; left: number; then: State }
  | { at: 'skippableSize' };

export class ZstdFrameWalker {
  private state: State = { at: 'magic' };
  /** Bytes of the fixed-size field being read (magic, frame header, block header). */
  private field: number[] = [];

  /**
   * How many bytes from `buf[off]` on to hand the decoder next: never more than up to the end of one
   * block, so one push decodes at most one block. Throws on anything the format does not allow.
   */
  take(buf: Uint8Array, off: number): number {
    let i = off;
    while (i < buf.length) {
      const s = this.state;
      if (s.at === 'skip') {
        const n = Math.min(s.left, buf.length - i);
        i += n;
        s.left -= n;
        if (s.left === 0) {
          this.state = s.then;
          if (s.then.at === 'blockHeader' || s.then.at === 'magic') return i - off; // a block (or frame) ended here
        }
        continue;
      }
      this.field.push(buf[i++]);
      this.onField();
    }
    return i - off;
  }

  /** Throws unless the stream ended exactly between frames. */
  end(): void {
    if (this.state.at !== 'magic' || this.field.length) throw new ZstdFormatError('zstd stream ends in the middle of a frame');
  }

  private onField(): void {
    const s = this.state;
    const f = this.field;
    switch (s.at) {
      case 'magic': {
        if (f.length < 4) return;
        const magic = (f[0] | (f[1] << 8) | (f[2] << 16) | (f[3] << 24)) >>> 0;
        this.field = [];
        if (magic === FRAME_MAGIC) this.state = { at: 'descriptor' };
        else if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) this.state = { at: 'skippableSize' };
        else throw new ZstdFormatError('not a zstd frame');
        return;
      }
      case 'skippableSize': {
        if (f.length < 4) return;
        const size = (f[0] | (f[1] << 8) | (f[2] << 16) | (f[3] << 24)) >>> 0;
        this.field = [];
        this.state = size ? { at: 'skip', left: size, then: { at: 'magic' } } : { at: 'magic' };
        return;
      }
      case 'descriptor': {
        const d = f[0];
        if (d & 0x08) throw new ZstdFormatError('zstd frame header sets a reserved bit');
        const fcsFlag = d >> 6;
        const singleSegment = (d & 0x20) !== 0;
        const dictBytes = [0, 1, 2, 4][d & 3];
        const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : [0, 2, 4, 8][fcsFlag];
        this.state = { at: 'header', need: 1 + (singleSegment ? 0 : 1) + dictBytes + fcsBytes, singleSegment, checksum: (d & 0x04) !== 0, dictBytes, fcsBytes };
        return;
      }
      case 'header': {
        if (f.length < s.need) return;
        this.field = [];
        const dictAt = s.singleSegment ? 1 : 2;
        if (littleEndian(f.slice(dictAt, dictAt + s.dictBytes))) throw new ZstdFormatError('zstd frame needs a dictionary, which layers cannot have');
        this.checkWindow(s.singleSegment ? contentSize(f.slice(dictAt + s.dictBytes)) : windowOf(f[1]));
        this.state = { at: 'blockHeader', checksum: s.checksum };
        return;
      }
      case 'blockHeader': {
        if (f.length < 3) return;
        this.field = [];
        const h = f[0] | (f[1] << 8) | (f[2] << 16);
        const last = (h & 1) === 1;
        const type = (h >> 1) & 3;
        const size = h >>> 3;
        if (type === 3) throw new ZstdFormatError('zstd block has the reserved type');
        if (size > MAX_BLOCK_BYTES) throw new ZstdFormatError(`zstd block of ${size} bytes is larger than the format allows`);
        const afterFrame: State = s.checksum ? { at: 'skip', left: 4, then: { at: 'magic' } } : { at: 'magic' };
        const then: State = last ? afterFrame : { at: 'blockHeader', checksum: s.checksum };
        const body = type === 1 ? 1 : size;
        this.state = body ? { at: 'skip', left: body, then } : then;
        return;
      }
    }
  }

  private checkWindow(bytes: number): void {
    if (bytes > MAX_WINDOW_BYTES) throw new ZstdFormatError(`zstd frame asks for a ${Math.round(bytes / 2 ** 20)} MiB window; at most ${MAX_WINDOW_BYTES / 2 ** 20} MiB is accepted`);
  }
}

/** Window_Descriptor: 2^(10 + exponent) plus mantissa eighths of that. */
function windowOf(b: number): number {
  const base = 2 ** (10 + (b >> 3));
  return base + (base / 8) * (b & 7);
}

function littleEndian(bytes: number[]): number {
  let v = 0;
  for (let i = bytes.length - 1; i >= 0; i--) v = v * 256 + bytes[i];
  return v;
}

/** Frame_Content_Size; its 2-byte form is offset by 256. */
function contentSize(bytes: number[]): number {
  return littleEndian(bytes) + (bytes.length === 2 ? 256 : 0);
}
