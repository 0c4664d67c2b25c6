// Just enough of the DNS wire format (RFC 1035) for one-question queries and A answers. Every
// packet here may be hostile (a sandbox's query, an upstream's reply): parsers check each bound and
// return undefined instead of throwing.

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
export const TYPE_CNAME = 5;
export const CLASS_IN = 1;

const FLAG_QR = 0x8000;
const FLAG_TC = 0x0200;
/** Longest CNAME chain followed in an answer. */
const MAX_CNAME_HOPS = 8;
/** Compression pointers followed in one name (a loop or a chain longer than this is malformed). */
const MAX_POINTERS = 32;

export function parseQuery(buf: Buffer): Question | undefined {
  if (buf.length < 12 || buf.readUInt16BE(4) !== 1 || buf[2] & 0x80) return undefined;
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
export function buildAnswer(q: Question, rcode: number, ips: string[] = [], ttl = 30, flags = 0): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(q.id, 0);
  head.writeUInt16BE(FLAG_QR | 0x0400 | (q.rd ? 0x0100 : 0) | 0x0080 | (rcode & 15) | flags, 2);
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
  tail.writeUInt16BE(CLASS_IN, 3);
  return Buffer.concat([head, ...labels, tail]);
}

/** A (possibly compressed) name at off: the lower-cased name and the offset just past it in place. */
export function readName(buf: Buffer, off: number): { name: string; end: number } | undefined {
  const labels: string[] = [];
  let end: number | undefined;
  let total = 0;
  for (let jumps = 0; ; ) {
    if (off >= buf.length) return undefined;
    const len = buf[off];
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length || ++jumps > MAX_POINTERS) return undefined;
      end ??= off + 2;
      off = ((len & 0x3f) << 8) | buf[off + 1];
      continue;
    }
    if (len & 0xc0) return undefined;
    if (len === 0) return { name: labels.join('.').toLowerCase(), end: end ?? off + 1 };
    if (off + 1 + len > buf.length || (total += len + 1) > 255) return undefined;
    labels.push(buf.subarray(off + 1, off + 1 + len).toString('latin1'));
    off += 1 + len;
  }
}

export interface Reply {
  id: number;
  rcode: number;
  /** TC: the answer did not fit; ask again over TCP. */
  truncated: boolean;
  /** The echoed question (undefined when the reply has none). */
  question?: { name: string; type: number; cls: number };
  /** IPv4 addresses of the queried name (following CNAMEs within the answer). */
  ips: string[];
  /** Smallest TTL (seconds) among the records used, undefined when there were none. */
  ttl?: number;
}

/** A reply to one of our queries; undefined when it is malformed or not a reply at all. */
export function parseReply(buf: Buffer): Reply | undefined {
  if (buf.length < 12) return undefined;
  const flags = buf.readUInt16BE(2);
  if (!(flags & FLAG_QR)) return undefined;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  if (qd > 1) return undefined;
  let off = 12;
  let question: Reply['question'];
  if (qd === 1) {
    const n = readName(buf, off);
    if (!n || n.end + 4 > buf.length) return undefined;
    question = { name: n.name, type: buf.readUInt16BE(n.end), cls: buf.readUInt16BE(n.end + 2) };
    off = n.end + 4;
  }
  const records: { owner: string; type: number; ttl: number; data: Buffer; at: number }[] = [];
  for (let i = 0; i < an; i++) {
    const n = readName(buf, off);
    if (!n || n.end + 10 > buf.length) return undefined;
    const type = buf.readUInt16BE(n.end);
    const cls = buf.readUInt16BE(n.end + 2);
    // RFC 2181: a TTL with the top bit set counts as zero.
    const ttl = buf.readUInt32BE(n.end + 4) > 0x7fffffff ? 0 : buf.readUInt32BE(n.end + 4);
    const len = buf.readUInt16BE(n.end + 8);
    const at = n.end + 10;
    if (at + len > buf.length) return undefined;
    if (cls === CLASS_IN) records.push({ owner: n.name, type, ttl, data: buf.subarray(at, at + len), at });
    off = at + len;
  }
  const result: Reply = { id: buf.readUInt16BE(0), rcode: flags & 15, truncated: !!(flags & FLAG_TC), question, ips: [] };
  if (!question) return result;
  // Only records of the queried name, or of the names it is a CNAME of, count.
  let name = question.name;
  const ttls: number[] = [];
  for (let hop = 0; hop <= MAX_CNAME_HOPS; hop++) {
    const a = records.filter((r) => r.owner === name && r.type === TYPE_A && r.data.length === 4);
    if (a.length) {
      result.ips = a.map((r) => [...r.data].join('.'));
      ttls.push(...a.map((r) => r.ttl));
      break;
    }
    const cname = records.find((r) => r.owner === name && r.type === TYPE_CNAME);
    const target = cname && readName(buf, cname.at);
    if (!target || target.end !== cname.at + cname.data.length) break;
    ttls.push(cname.ttl);
    name = target.name;
  }
  if (result.ips.length) result.ttl = Math.min(...ttls);
  return result;
}
