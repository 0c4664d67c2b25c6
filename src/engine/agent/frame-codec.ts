// The frames of the agent protocol (agent/frame.go is the other side): a 9-byte header (payload
// length u32, type u8, channel u32, big-endian) and the payload. The daemon reads frames from an
// untrusted peer, so the decoder refuses anything outside the rules before buffering it.

export const FRAME = { json: 1, data: 2, eof: 3, ack: 4 } as const;
export type FrameType = (typeof FRAME)[keyof typeof FRAME];

export const HEADER_LEN = 9;
/** Largest payload either side accepts. */
export const MAX_PAYLOAD = 1 << 20;
/**
 * Largest data frame either side sends. The daemon says so in each request that opens a stream
 * (`frame`); an agent that does not read it sends 64 KiB frames. Larger frames mean fewer system
 * calls and wake-ups inside gVisor per MiB.
 */
export const MAX_DATA = 256 << 10;

export interface Frame {
  type: FrameType;
  channel: number;
  payload: Buffer;
}

/** The peer broke the protocol; the connection ends. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export function encodeFrame(type: FrameType, channel: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LEN + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32BE(channel >>> 0, 5);
  payload.copy(out, HEADER_LEN);
  return out;
}

export function ackPayload(offset: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(offset));
  return b;
}

/** Reads the 8-byte offset of an ack frame (only offsets up to 2^53 count; a larger one is a lie). */
export function readAck(payload: Buffer): number {
  if (payload.length !== 8) throw new ProtocolError(`an ack carries 8 bytes, not ${payload.length}`);
  const v = payload.readBigUInt64BE(0);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError('ack offset out of range');
  return Number(v);
}

const KNOWN = new Set<number>(Object.values(FRAME));

/**
 * Splits a byte stream into frames. Holds at most one header and one payload of at most
 * MAX_PAYLOAD bytes; an oversized length or an unknown type throws before the payload is read.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(data: Buffer, onFrame: (f: Frame) => void): void {
    this.chunks.push(data);
    this.buffered += data.length;
    for (;;) {
      if (this.buffered < HEADER_LEN) return;
      const head = this.peek(HEADER_LEN);
      const len = head.readUInt32BE(0);
      const type = head.readUInt8(4);
      if (!KNOWN.has(type)) throw new ProtocolError(`unknown frame type ${type}`);
      if (len > MAX_PAYLOAD) throw new ProtocolError(`frame of ${len} bytes is larger than the ${MAX_PAYLOAD} allowed`);
      if (type === FRAME.data && len > MAX_DATA) throw new ProtocolError(`data frame of ${len} bytes is larger than the ${MAX_DATA} allowed`);
      if (this.buffered < HEADER_LEN + len) return;
      const all = this.take(HEADER_LEN + len);
      onFrame({ type: type as FrameType, channel: all.readUInt32BE(5), payload: all.subarray(HEADER_LEN) });
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    const first = this.peek(n);
    const out = first.subarray(0, n);
    const rest = first.subarray(n);
    this.chunks[0] = rest;
    if (!rest.length) this.chunks.shift();
    this.buffered -= n;
    return out;
  }
}
