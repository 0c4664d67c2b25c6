import { StringDecoder } from 'node:string_decoder';
import { Transform, type TransformCallback } from 'node:stream';
import { replaceBody, replaceSseLine } from './rules.js';
import type { BodyReplacement } from './types.js';

// Response body replacement as streams, so the proxy never holds more than `cap` bytes of a body:
// a whole body is rewritten only when it fits the cap, an event stream line by line.

/**
 * Rewrite a whole response body if it ends within `cap` bytes; a longer one passes through unchanged
 * (what was held is written out first) and `onOverflow` is called once.
 */
export class CappedBodyRewrite extends Transform {
  private held: Buffer[] = [];
  private size = 0;
  private overflowed = false;

  constructor(private readonly reps: BodyReplacement[], private readonly cap: number, private readonly onOverflow: () => void) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.overflowed) return cb(null, chunk);
    this.held.push(chunk);
    this.size += chunk.length;
    if (this.size <= this.cap) return cb();
    this.overflowed = true;
    this.onOverflow();
    const all = Buffer.concat(this.held, this.size);
    this.held = [];
    cb(null, all);
  }

  override _flush(cb: TransformCallback): void {
    if (this.overflowed) return cb();
    cb(null, Buffer.from(replaceBody(Buffer.concat(this.held, this.size).toString('utf8'), this.reps)));
  }
}

/**
 * Rewrite the `data:` lines of an event stream as they pass. A line longer than `cap` characters is passed on
 * unchanged (from its start to its end) and `onOverflow` is called once.
 */
export class SseLineRewrite extends Transform {
  private readonly decoder = new StringDecoder('utf8');
  private pending = '';
  /** Inside an over-long line: pass text through until its newline. */
  private raw = false;
  private overflowed = false;

  constructor(private readonly reps: BodyReplacement[], private readonly cap: number, private readonly onOverflow: () => void) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    cb(null, this.rewrite(this.decoder.write(chunk)));
  }

  override _flush(cb: TransformCallback): void {
    const rest = this.rewrite(this.decoder.end());
    const last = this.raw ? this.pending : replaceSseLine(this.pending, this.reps);
    this.pending = '';
    cb(null, rest + last);
  }

  private rewrite(text: string): string {
    let out = '';
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      const piece = text.slice(start, nl);
      start = nl + 1;
      if (this.raw) {
        out += `${piece}\n`;
        this.raw = false;
      } else {
        out += `${replaceSseLine(this.pending + piece, this.reps)}\n`;
      }
      this.pending = '';
    }
    const tail = text.slice(start);
    if (this.raw) return out + tail;
    this.pending += tail;
    if (this.pending.length > this.cap) {
      if (!this.overflowed) this.onOverflow();
      this.overflowed = true;
      this.raw = true;
      out += this.pending;
      this.pending = '';
    }
    return out;
  }
}
