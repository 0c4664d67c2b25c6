// Runs inside the fake-internet namespace (ip netns exec): DNS from fixed records, HTTP on :80 and
// HTTPS on :443 with the test's own CA, echoing each request back as JSON (and a few paths that
// hang, drip or send big bodies). A few names get hostile DNS behaviour (spoofed replies before the
// real one, a truncated reply whose real answer is served over TCP) so tests can tell what the
// daemon's resolver accepted from the address it pins.
import { createSocket, type RemoteInfo } from 'node:dgram';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { buildAnswer, buildQuery, parseQuery, type Question } from '../../src/net/dns-wire.js';

const cfg = JSON.parse(process.argv[2]) as { addrs: string[]; dnsAddr: string; records: Record<string, string[]>; key: string; cert: string };
const served = new Map<string, number>();
const [api, other] = cfg.addrs;

/** The answer for a name from the records; a list of several is served one per query (DNS rebinding, TTL refresh). */
function answerFor(q: Question): Buffer {
  const list = cfg.records[q.name];
  const n = served.get(q.name) ?? 0;
  served.set(q.name, n + 1);
  const ips = list ? [list[Math.min(n, list.length - 1)]] : [];
  return buildAnswer(q, list ? 0 : 3, q.type === 1 ? ips : [], 1);
}

const dns = createSocket('udp4');
const fromOtherAddress = createSocket('udp4');
const fromOtherPort = createSocket('udp4');
const lure = (q: Question) => buildAnswer(q, 0, q.type === 1 ? [other] : [], 1);
/** Sent before the real answer: a resolver that takes any of these pins `other` instead of `api`. */
const spoofs: Record<string, (q: Question, r: RemoteInfo) => void> = {
  'spoof-source.test': (q, r) => fromOtherAddress.send(lure(q), r.port, r.address),
  'spoof-port.test': (q, r) => fromOtherPort.send(lure(q), r.port, r.address),
  'spoof-id.test': (q, r) => dns.send(lure({ ...q, id: (q.id + 1) & 0xffff }), r.port, r.address),
  'spoof-question.test': (q, r) => dns.send(lure({ ...q, raw: buildQuery(q.id, 'other.test').subarray(12) }), r.port, r.address),
};
dns.on('message', (msg, r) => {
  const q = parseQuery(msg);
  if (!q) return;
  const spoof = spoofs[q.name];
  if (spoof) {
    spoof(q, r);
    setTimeout(() => dns.send(buildAnswer(q, 0, q.type === 1 ? [api] : [], 1), r.port, r.address), 300);
    return;
  }
  // truncated.test: over UDP a truncated (TC) reply naming `other`; the real answer only over TCP.
  if (q.name === 'truncated.test') {
    const tc = buildAnswer(q, 0, q.type === 1 ? [other] : [], 1);
    tc.writeUInt16BE(tc.readUInt16BE(2) | 0x0200, 2);
    return void dns.send(tc, r.port, r.address);
  }
  dns.send(answerFor(q), r.port, r.address);
});
dns.bind(53, cfg.dnsAddr);
fromOtherAddress.bind(53, other);
fromOtherPort.bind(5353, api);

createServer((c) => {
  let buf = Buffer.alloc(0);
  c.on('error', () => c.destroy());
  c.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
    const q = parseQuery(buf.subarray(2, 2 + buf.readUInt16BE(0)));
    if (!q) return void c.destroy();
    const a = q.name === 'truncated.test' ? buildAnswer(q, 0, q.type === 1 ? [api] : [], 1) : answerFor(q);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(a.length);
    c.end(Buffer.concat([len, a]));
  });
}).listen(53, cfg.dnsAddr);

function echo(req: IncomingMessage, res: ServerResponse) {
  const parts: Buffer[] = [];
  req.on('data', (c: Buffer) => parts.push(c));
  req.on('end', () => {
    // Accept the request and never answer (an upstream that hangs).
    if (req.url?.startsWith('/hang')) return;
    // Answer at once, then one byte a second for 30 s (a long, never idle response).
    if (req.url?.startsWith('/drip')) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      let n = 0;
      const t = setInterval(() => (++n > 30 || res.destroyed ? (clearInterval(t), res.end()) : res.write('.')), 1000);
      res.write('.');
      return;
    }
    // A body of ?n= bytes: the word secret-word, then filler; with ?chunked=1 its length is not declared.
    if (req.url?.startsWith('/big')) {
      const q = new URL(req.url, 'http://x').searchParams;
      const body = Buffer.concat([Buffer.from('secret-word'), Buffer.alloc(Math.max(0, Number(q.get('n') ?? 0) - 11), 'a')]);
      res.writeHead(200, { 'content-type': 'text/plain', ...(q.get('chunked') ? {} : { 'content-length': String(body.length) }) });
      for (let i = 0; i < body.length; i += 65536) res.write(body.subarray(i, i + 65536));
      res.end();
      return;
    }
    if (req.url?.startsWith('/sse')) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.end('event: x\ndata: hello secret-word\n\ndata: again secret-word\n\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'fake', 'x-remove-me': '1' });
    res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(parts).toString(), local: req.socket.localAddress, tls: 'encrypted' in req.socket }));
  });
}

for (const a of cfg.addrs) {
  http.createServer(echo).listen(80, a);
  https.createServer({ key: readFileSync(cfg.key), cert: readFileSync(cfg.cert) }, echo).listen(443, a);
}
process.stdout.write('ready\n');
