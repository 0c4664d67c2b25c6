import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { buildQuery, CLASS_IN, parseReply, TYPE_A, type Reply } from './dns-wire.js';

// The daemon's upstream DNS client. Queries leave only from the egress address. A reply counts only
// when it comes from the server's address and port 53, carries our random id and echoes our
// question; anything else is ignored (not an error: a spoofer must not be able to fail a lookup).
// A truncated reply is asked again over TCP.

export interface UpstreamAnswer {
  ips: string[];
  /** Seconds the answer may be used (the smallest TTL of the records used; 0 when none). */
  ttl: number;
}

const MAX_TCP_REPLY = 65535;

export class UpstreamDns {
  constructor(
    private readonly localAddress: string | undefined,
    private readonly timeoutMs = 3000,
    private readonly port = 53,
  ) {}

  async query(name: string, servers: string[]): Promise<UpstreamAnswer> {
    if (!this.localAddress) throw new Error('no egress interface configured');
    let last: Error = new Error('no DNS server configured for upstream lookups (cordon serve --dns-server IP)');
    for (const server of servers) {
      try {
        return await this.ask(name, server);
      } catch (e) {
        last = e as Error;
      }
    }
    throw last;
  }

  private async ask(name: string, server: string): Promise<UpstreamAnswer> {
    const n = name.toLowerCase().replace(/\.$/, '');
    const id = randomInt(65536);
    const query = buildQuery(id, n);
    const matches = (r: Reply) => r.id === id && r.question?.name === n && r.question.type === TYPE_A && r.question.cls === CLASS_IN;
    let r = await this.overUdp(query, server, matches);
    if (r.truncated) r = await this.overTcp(query, server, matches);
    if (r.rcode === 3) return { ips: [], ttl: 0 };
    if (r.rcode !== 0) throw new Error(`DNS server ${server} answered rcode ${r.rcode}`);
    return { ips: r.ips, ttl: r.ttl ?? 0 };
  }

  private overUdp(query: Buffer, server: string, matches: (r: Reply) => boolean): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const sock = createSocket('udp4');
      let settled = false;
      const done = (err?: Error, r?: Reply) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.close();
        if (err) reject(err);
        else resolve(r!);
      };
      const timer = setTimeout(() => done(new Error(`DNS server ${server} did not answer`)), this.timeoutMs);
      sock.on('error', (e) => done(e));
      sock.on('message', (msg, from) => {
        if (from.address !== server || from.port !== this.port) return;
        const r = parseReply(msg);
        if (r && matches(r)) done(undefined, r);
      });
      sock.bind({ address: this.localAddress, port: 0 }, () => sock.send(query, this.port, server));
    });
  }

  private overTcp(query: Buffer, server: string, matches: (r: Reply) => boolean): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const sock = connect({ host: server, port: this.port, localAddress: this.localAddress });
      let buf = Buffer.alloc(0);
      let settled = false;
      const done = (err?: Error, r?: Reply) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(r!);
      };
      const timer = setTimeout(() => done(new Error(`DNS server ${server} did not answer over TCP`)), this.timeoutMs);
      sock.on('error', (e) => done(new Error(`DNS server ${server} over TCP: ${e.message}`)));
      sock.on('connect', () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(query.length);
        sock.end(Buffer.concat([len, query]));
      });
      sock.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c]);
        if (buf.length > 2 + MAX_TCP_REPLY) return done(new Error(`DNS server ${server} sent more than one reply over TCP`));
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        const r = parseReply(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        if (!r || !matches(r)) return done(new Error(`DNS server ${server} sent a malformed or mismatched reply over TCP`));
        done(undefined, r);
      });
      sock.on('end', () => done(new Error(`DNS server ${server} closed the TCP connection without a reply`)));
    });
  }
}
