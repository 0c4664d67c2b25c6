// Runs inside the fake-internet namespace (ip netns exec): DNS from fixed records, HTTP on :80 and
// HTTPS on :443 with the test's own CA, echoing each request back as JSON (and a few paths that
// hang, drip or send big bodies).
import { createSocket } from 'node:dgram';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { buildAnswer, parseQuery } from '../../src/net/dns-wire.js';

const cfg = JSON.parse(process.argv[2]) as { addrs: string[]; dnsAddr: string; records: Record<string, string[]>; key: string; cert: string };
const served = new Map<string, number>();

const dns = createSocket('udp4');
dns.on('message', (msg, r) => {
  const q = parseQuery(msg);
  if (!q) return;
  const list = cfg.records[q.name];
  const n = served.get(q.name) ?? 0;
  served.set(q.name, n + 1);
  // A list of several answers is served one per query (the later ones model DNS rebinding).
  const ips = list ? [list[Math.min(n, list.length - 1)]] : [];
  dns.send(buildAnswer(q, list ? 0 : 3, q.type === 1 ? ips : [], 1), r.port, r.address);
});
dns.bind(53, cfg.dnsAddr);

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
