// Attacks on the network layer (network slot 25), from hostile sandboxes and clients: a DNS flood
// for names nobody answers (each upstream lookup holds a daemon socket), DNS queries sent with
// another sandbox's source address, ports of a sandbox made through the native API reached through
// E2B's routing headers without any credential, a secret bound to host:443 sent over port 80, and
// open egress to shared address space (100.64.0.0/10).
// Egress goes only to the test's fake internet.
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Sandbox as E2bSandbox } from 'e2b';
import type { Sandbox } from '../src/sdk/index.js';
import { sleep, until } from './helpers/assert.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 25;
const KEY = 'attack-net-key-0c7d';
const runtime = RUNTIMES[0];
let d: TestDaemon;
let fi: FakeInternet;

before(async () => {
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('attack-net', { apiKey: KEY, args: [...fi.daemonArgs(SLOT), '--runtime', runtime] });
});
after(() => tearDownNetSuite(d, SLOT, fi));

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${d.url}${path}`, { ...init, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', ...(init.headers as Record<string, string>) } });
const sh = async (sb: Sandbox, script: string) => {
  const r = await sb.exec(['sh', '-c', script], { timeout: 120 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};
const py = (sb: Sandbox, code: string) => sh(sb, `python3 -c '${code.replace(/'/g, `'"'"'`)}'`);
const networkEvents = async (id: string) =>
  ((await (await api(`/v1/sandboxes/${id}/events`)).json()) as { type: string; message: string }[]).filter((e) => e.type === 'network').map((e) => e.message);
const openFds = () => readdirSync(`/proc/${d.proc.pid}/fd`).length;

/** Python that builds a DNS query for `name` with id `qid`. */
const PY_QUERY = `
import socket, struct
def query(name, qid):
    q = struct.pack(">HHHHHH", qid, 256, 1, 0, 0, 0)
    for p in name.split("."): q += bytes([len(p)]) + p.encode()
    return q + b"\\0\\0\\1\\0\\1"
def gateway():
    for l in open("/proc/net/route").read().splitlines()[1:]:
        f = l.split()
        if f[1] == "00000000": return socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
`;

describe('DNS abuse', () => {
  test('a flood of lookups for names nobody answers does not eat the daemon\'s file descriptors', async () => {
    // This sandbox's upstream DNS server is an address where a socket takes queries and never answers.
    const sb = await d.client.create({ runtime: 'crun', network: { mode: 'open', dns_servers: [fi.other] } });
    try {
      const base = openFds();
      let peak = base;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          peak = Math.max(peak, openFds());
          await sleep(20);
        }
      })();
      const r = await py(sb, `${PY_QUERY}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
g = gateway()
import time
for i in range(6000):
    s.sendto(query("n%d.flood.test" % i, i), (g, 53))
    if i % 100 == 99: time.sleep(0.025)
print("sent")`);
      assert.equal(r.out, 'sent', r.err);
      await sleep(5000);
      sampling = false;
      await sampler;
      assert.ok(peak - base < 250, `the daemon held ${peak - base} more file descriptors during the flood`);
      assert.equal((await fetch(`${d.url}/v1/health`)).status, 200);
      await until('the daemon to let the sockets go', () => openFds() - base < 50, 30_000);
    } finally {
      await sb.remove().catch(() => {});
    }
  });

  test('a DNS query with another sandbox\'s source address is not answered as that sandbox\'s', async () => {
    const a = await d.client.create({ runtime: 'crun', network: { allow_hosts: ['api.test'] } });
    const b = await d.client.create({ runtime: 'crun', network: { allow_hosts: ['api.test'] } });
    try {
      const bIp = (await py(b, 'import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.connect(("198.51.100.1",53))\nprint(s.getsockname()[0])')).out;
      assert.match(bIp, /^100\.\d+\.\d+\.\d+$/);
      // Root in a crun sandbox has CAP_NET_RAW: a raw UDP packet from B's address, then a plain one.
      const r = await py(a, `${PY_QUERY}
g = gateway()
body = query("spoofed-probe.test", 4242)
udp = struct.pack(">HHHH", 40000, 53, 8 + len(body), 0) + body
ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 7, 0, 64, 17, 0, socket.inet_aton("${bIp}"), socket.inet_aton(g))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.sendto(ip + udp, (g, 0))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(query("control-probe.test", 4343), (g, 53))
s.recv(512)
print("sent")`);
      assert.equal(r.out, 'sent', r.err);
      await until('the plain query to be recorded for A', async () => (await networkEvents(a.id)).some((m) => m.includes('control-probe.test')), 30_000);
      await sleep(1500); // events are written in batches
      const bEvents = await networkEvents(b.id);
      assert.ok(!bEvents.some((m) => m.includes('spoofed-probe.test')), `B's log shows a query B never sent: ${bEvents.join('; ')}`);
    } finally {
      await a.remove().catch(() => {});
      await b.remove().catch(() => {});
    }
  });
});

/** A request to the daemon addressed to a sandbox port the way E2B's client proxy routes it. */
function toPort(id: string, port: number, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const u = new URL(d.url);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: '/', headers: { 'e2b-sandbox-id': id, 'e2b-sandbox-port': String(port), ...headers } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('open egress', () => {
  test('shared address space (100.64.0.0/10: carrier NAT, VPC secondary ranges) is blocked like private ranges', async () => {
    const sb = await d.client.create({ runtime, network: { mode: 'open' } });
    try {
      const pub = await sh(sb, 'curl -sS --max-time 8 http://api.test/');
      assert.match(pub.out, /"method":"GET"/, `a public address is reachable: ${pub.out} ${pub.err}`);
      // DNS hands out no such address, and the proxy refuses the name even when the client knows one.
      const dns = await sh(sb, 'curl -sS --max-time 8 http://cgnat.test/');
      assert.match(dns.err, /resolve host/, `${dns.out} ${dns.err}`);
      const r = await sh(sb, `curl -sS --max-time 8 -w " %{http_code}" --resolve cgnat.test:80:${fi.api} http://cgnat.test/`);
      assert.match(r.out, /ErrBlocked.*100\.64\.0\.9.*range.* 403$/, `${r.out} ${r.err}`);
    } finally {
      await sb.remove().catch(() => {});
    }
  });
});

describe('ports and secrets', () => {
  test('ports of a sandbox made through the native API are not open to anyone through E2B routing', async () => {
    const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'] } });
    try {
      const r = await sh(sb, `mkdir -p /srv && echo native-port > /srv/index.html && (cd /srv && nohup python3 -m http.server 8000 >/dev/null 2>&1 &) ; sleep 1`);
      assert.equal(r.code, 0, r.err);
      let withKey = { status: 0, body: '' };
      await until('the server inside to answer the daemon key', async () => (withKey = await toPort(sb.id, 8000, { authorization: `Bearer ${KEY}` })).status === 200, 30_000);
      assert.match(withKey.body, /native-port/);
      const anonymous = await toPort(sb.id, 8000);
      assert.equal(anonymous.status, 401, anonymous.body);
      assert.doesNotMatch(anonymous.body, /native-port/);
      // Connected through E2B's API, it follows E2B's rule: ports are public unless made private.
      await E2bSandbox.connect(sb.id, { apiKey: KEY, apiUrl: d.url, sandboxUrl: d.url });
      assert.equal((await toPort(sb.id, 8000)).status, 200);
    } finally {
      await sb.remove().catch(() => {});
    }
  });

  test('a secret bound to host:443 is not substituted on a request to port 80', async () => {
    const sb = await d.client.create({ runtime, network: { allow_hosts: ['api.test'], secrets: ['TOK=tok-value-4e1a@api.test:443'] } });
    try {
      const tls = await sh(sb, 'curl -sS --max-time 8 -H "X-Tok: $TOK" https://api.test/');
      assert.match(tls.out, /tok-value-4e1a/, `substituted on 443: ${tls.out} ${tls.err}`);
      const plain = await sh(sb, 'curl -sS --max-time 8 -H "X-Tok: $TOK" http://api.test/');
      assert.doesNotMatch(plain.out, /tok-value-4e1a/, 'the value went out in clear text on port 80');
      assert.match(plain.out, /ErrSecretLeak/);
    } finally {
      await sb.remove().catch(() => {});
    }
  });
});
