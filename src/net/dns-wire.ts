// Just enough of the DNS wire format (RFC 1035) for one-question queries and A answers.

export interface Question {
  id: number;
  name: string;
  type: number;
  cls: number;
  /** The raw question section, echoed back in answers. */
  raw: Buffer;
  rd: boolean;
}

export const TYPE_A = 1;

export function parseQuery(buf: Buffer): Question | undefined {
  if (buf.length < 12 || buf.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let off = 12;
  for (;;) {
    if (off >= buf.length) return undefined;
    const len = buf[off];
    if (len === 0) break;
    if (len > 63 || off + 1 + len > buf.length) return undefined;
    labels.push(buf.subarray(off + 1, off + 1 + len).toString('latin1'));
    off += 1 + len;
  }
  if (off + 5 > buf.length) return undefined;
  return { id: buf.readUInt16BE(0), name: labels.join('.').toLowerCase(), type: buf.readUInt16BE(off + 1), cls: buf.readUInt16BE(off + 3), raw: buf.subarray(12, off + 5), rd: (buf[2] & 1) === 1 };
}

/** An answer: rcode 0 with the given IPv4 addresses (possibly none), 3 = NXDOMAIN, 5 = REFUSED. */
export function buildAnswer(q: Question, rcode: number, ips: string[] = [], ttl = 30): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(q.id, 0);
  head.writeUInt16BE(0x8000 | 0x0400 | (q.rd ? 0x0100 : 0) | 0x0080 | (rcode & 15), 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(ips.length, 6);
  const answers = ips.map((ip) => {
    const a = Buffer.alloc(16);
    a.writeUInt16BE(0xc00c, 0);
    a.writeUInt16BE(TYPE_A, 2);
    a.writeUInt16BE(1, 4);
    a.writeUInt32BE(ttl, 6);
    a.writeUInt16BE(4, 10);
    ip.split('.').forEach((o, i) => (a[12 + i] = Number(o)));
    return a;
  });
  return Buffer.concat([head, q.raw, ...answers]);
}

export function buildQuery(id: number, name: string, type = TYPE_A): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2);
  head.writeUInt16BE(1, 4);
  const labels = name.split('.').filter(Boolean).map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'latin1')]));
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(type, 1);
  tail.writeUInt16BE(1, 3);
  return Buffer.concat([head, ...labels, tail]);
}

function skipName(buf: Buffer, off: number): number {
  for (;;) {
    const len = buf[off];
    if (len === undefined) throw new Error('truncated');
    if ((len & 0xc0) === 0xc0) return off + 2;
    if (len === 0) return off + 1;
    off += 1 + len;
  }
}

/** IPv4 addresses and the rcode of a response. */
export function parseAnswers(buf: Buffer): { rcode: number; ips: string[]; id: number } {
  const id = buf.readUInt16BE(0);
  const rcode = buf.readUInt16BE(2) & 15;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) off = skipName(buf, off) + 4;
  const ips: string[] = [];
  for (let i = 0; i < an; i++) {
    off = skipName(buf, off);
    const type = buf.readUInt16BE(off);
    const len = buf.readUInt16BE(off + 8);
    if (type === TYPE_A && len === 4) ips.push([...buf.subarray(off + 10, off + 14)].join('.'));
    off += 10 + len;
  }
  return { rcode, ips, id };
}
