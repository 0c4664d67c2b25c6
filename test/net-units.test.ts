// Unit tests of single network modules, no daemon and no sandbox: DNS wire parsing of hostile
// packets, the upstream DNS client against hostile servers on loopback, pin refresh on TTL expiry,
// in-process leaf certificates and their cache, add-host semantics, secret parsing, the
// resolv.conf default and the headers the port proxy lets into a sandbox.
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { randomBytes, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { resolvConfServers } from '../src/config.js';
import { CertAuthority } from '../src/net/ca.js';
import { buildAnswer, buildQuery, parseQuery, parseReply, type Question } from '../src/net/dns-wire.js';
import { Policy } from '../src/net/policy.js';
import { headersForSandbox } from '../src/net/port-proxy.js';
import { MAX_LOOKUPS_PER_SANDBOX, MAX_PINS, PIN_MIN_TTL_S, resolveFor, type Pin, type ResolveContext } from '../src/net/resolver.js';
import { SavedPins } from '../src/net/saved-pins.js';
import { parseSecret, secretEnvFrom } from '../src/net/secrets.js';
import { emptyNetwork, type NetworkSpec } from '../src/net/types.js';
import { UpstreamDns, type UpstreamAnswer } from '../src/net/upstream-dns.js';
import { run } from '../src/util/proc.js';

const q = (name: string, id = 7): Question => parseQuery(buildQuery(id, name))!;

describe('dns-wire: hostile packets', () => {
  test('malformed replies parse to undefined, never throw', () => {
    const good = buildAnswer(q('a.test'), 0, ['1.2.3.4']);
    assert.deepEqual(parseReply(good)?.ips, ['1.2.3.4']);
    const loop = Buffer.from(good);
    loop.writeUInt16BE(0xc00c, 12); // the question name points at itself
    const cases: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['short header', good.subarray(0, 11)],
      ['not a reply (QR clear)', buildQuery(7, 'a.test')],
      ['cut in the question', good.subarray(0, 16)],
      ['cut in an answer', good.subarray(0, good.length - 2)],
      ['pointer loop', loop],
      ['two questions', Buffer.concat([good.subarray(0, 4), Buffer.from([0, 2]), good.subarray(6)])],
      ['more answers than data', Buffer.concat([good.subarray(0, 6), Buffer.from([0xff, 0xff]), good.subarray(8)])],
      ['pointer past the end', Buffer.concat([good.subarray(0, 12), Buffer.from([0xc0, 0xff, 0, 1, 0, 1])])],
      ['reserved label type', Buffer.concat([good.subarray(0, 12), Buffer.from([0x80, 0, 0, 1, 0, 1])])],
    ];
    for (const [what, b] of cases) assert.equal(parseReply(b), undefined, what);
    // A name longer than 255 bytes.
    const long = Buffer.concat([good.subarray(0, 4), Buffer.from([0, 1, 0, 0, 0, 0, 0, 0]), ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 97)])), Buffer.from([0, 0, 1, 0, 1])]);
    assert.equal(parseReply(long), undefined, 'a name over 255 bytes');
  });

  test('random bytes never throw (replies and queries)', () => {
    for (let i = 0; i < 5000; i++) {
      const b = randomBytes(1 + (i % 300));
      // Half of them look like replies with one question, so the parser goes past the header.
      if (i % 2 && b.length >= 6) b.writeUInt32BE(0x81800001, 2);
      assert.doesNotThrow(() => parseReply(b));
      assert.doesNotThrow(() => parseQuery(b));
    }
  });

  test('only records of the asked name count, through CNAMEs; the smallest TTL is kept', () => {
    // a.test CNAME b.test; b.test A 5.6.7.8; plus an unrelated A record for evil.test.
    const question = buildQuery(9, 'a.test').subarray(12);
    const rr = (owner: Buffer, type: number, ttl: number, data: Buffer) => {
      const h = Buffer.alloc(10);
      h.writeUInt16BE(type, 0);
      h.writeUInt16BE(1, 2);
      h.writeUInt32BE(ttl, 4);
      h.writeUInt16BE(data.length, 8);
      return Buffer.concat([owner, h, data]);
    };
    const name = (n: string) => buildQuery(0, n).subarray(12, -4);
    const head = Buffer.from([0, 9, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0]);
    const msg = Buffer.concat([
      head, question,
      rr(Buffer.from([0xc0, 12]), 5, 300, name('b.test')),
      rr(name('evil.test'), 1, 300, Buffer.from([6, 6, 6, 6])),
      rr(name('b.test'), 1, 60, Buffer.from([5, 6, 7, 8])),
    ]);
    const r = parseReply(msg)!;
    assert.deepEqual(r.ips, ['5.6.7.8']);
    assert.equal(r.ttl, 60);
    assert.equal(r.question?.name, 'a.test');
    const tc = parseReply(buildAnswer(q('a.test'), 0, [], 30, 0x0200))!;
    assert.equal(tc.truncated, true);
  });
});

/** A hostile DNS server on loopback: the handler decides what to send for each query. */
async function fakeDns(handler: (q: Question, reply: (b: Buffer, from?: UdpSocket) => void) => void, tcpAnswer?: (q: Question) => Buffer) {
  const main = createSocket('udp4');
  const spoofer = createSocket('udp4');
  await new Promise<void>((r) => main.bind(0, '127.0.0.1', r));
  const port = main.address().port;
  await new Promise<void>((r) => spoofer.bind(0, '127.0.0.1', r));
  const otherAddress = createSocket('udp4');
  await new Promise<void>((r) => otherAddress.bind(port, '127.0.0.2', r));
  main.on('message', (m, rinfo) => {
    const query = parseQuery(m);
    if (query) handler(query, (b, from = main) => from.send(b, rinfo.port, rinfo.address));
  });
  let tcp: Server | undefined;
  if (tcpAnswer) {
    tcp = createServer((c) => {
      c.once('data', (d: Buffer) => {
        const a = tcpAnswer(parseQuery(d.subarray(2))!);
        const len = Buffer.alloc(2);
        len.writeUInt16BE(a.length);
        c.end(Buffer.concat([len, a]));
      });
    });
    await new Promise<void>((r) => tcp!.listen(port, '127.0.0.1', r));
  }
  return {
    port, spoofer, otherAddress,
    close: () => { main.close(); spoofer.close(); otherAddress.close(); tcp?.close(); },
  };
}

describe('upstream DNS client', () => {
  const a = (query: Question, ip: string, flags = 0) => buildAnswer(query, 0, [ip], 120, flags);

  test('spoofed replies (other source address, other port, wrong id, wrong question) are ignored', async () => {
    const srv = await fakeDns((query, reply) => {
      reply(a(query, '6.6.6.1'), srv.otherAddress);
      reply(a(query, '6.6.6.2'), srv.spoofer);
      reply(a({ ...query, id: (query.id + 1) & 0xffff }, '6.6.6.3'));
      reply(a({ ...query, raw: buildQuery(0, 'evil.test').subarray(12) }, '6.6.6.4'));
      setTimeout(() => reply(a(query, '1.2.3.4')), 100);
    });
    try {
      const up = new UpstreamDns('127.0.0.1', 3000, srv.port);
      assert.deepEqual(await up.query('api.test', ['127.0.0.1']), { ips: ['1.2.3.4'], ttl: 120 });
    } finally {
      srv.close();
    }
  });

  test('a truncated reply is asked again over TCP', async () => {
    const srv = await fakeDns((query, reply) => reply(a(query, '6.6.6.6', 0x0200)), (query) => a(query, '1.2.3.5'));
    try {
      const up = new UpstreamDns('127.0.0.1', 3000, srv.port);
      assert.deepEqual((await up.query('api.test', ['127.0.0.1'])).ips, ['1.2.3.5']);
    } finally {
      srv.close();
    }
  });

  test('only spoofed replies: the lookup times out instead of taking one', async () => {
    const srv = await fakeDns((query, reply) => reply(a(query, '6.6.6.1'), srv.spoofer));
    try {
      await assert.rejects(new UpstreamDns('127.0.0.1', 500, srv.port).query('api.test', ['127.0.0.1']), /did not answer/);
    } finally {
      srv.close();
    }
  });
});

describe('pins: refreshed on TTL expiry, within the policy', () => {
  const spec = (over: Partial<NetworkSpec> = {}): NetworkSpec => ({ ...emptyNetwork('allowlist'), allow: ['*.test'], ...over });
  class Scripted {
    calls = 0;
    constructor(private readonly answers: (UpstreamAnswer | Error)[]) {}
    async query(): Promise<UpstreamAnswer> {
      const a = this.answers[Math.min(this.calls++, this.answers.length - 1)];
      if (a instanceof Error) throw a;
      return a;
    }
  }
  const ctxOf = (s: NetworkSpec): ResolveContext => ({ policy: new Policy(s), pins: new Map<string, Pin>(), upstream: ['192.0.2.53'] });
  const expire = (ctx: ResolveContext, name: string) => (ctx.pins.get(name)!.expires = Date.now() - 1);

  test('an expired pin is asked again and replaced by the new answer; a fresh one is not', async () => {
    const ctx = ctxOf(spec());
    const up = new Scripted([{ ips: ['198.51.100.1'], ttl: 1 }, { ips: ['198.51.100.2'], ttl: 1 }]);
    assert.deepEqual((await resolveFor(ctx, up as unknown as UpstreamDns, 'a.test')).ips, ['198.51.100.1']);
    assert.ok(ctx.pins.get('a.test')!.expires >= Date.now() + (PIN_MIN_TTL_S - 1) * 1000, 'tiny TTLs are raised to the floor');
    assert.deepEqual((await resolveFor(ctx, up as unknown as UpstreamDns, 'a.test')).ips, ['198.51.100.1']);
    assert.equal(up.calls, 1);
    expire(ctx, 'a.test');
    assert.deepEqual((await resolveFor(ctx, up as unknown as UpstreamDns, 'a.test')).ips, ['198.51.100.2']);
    assert.equal(up.calls, 2);
  });

  test('a refresh to a blocked address, NXDOMAIN or an error keeps the pinned answer', async () => {
    const ctx = ctxOf(spec());
    const up = new Scripted([{ ips: ['198.51.100.1'], ttl: 60 }, { ips: ['10.0.0.5'], ttl: 60 }, { ips: [], ttl: 0 }, new Error('timeout')]);
    const ask = () => resolveFor(ctx, up as unknown as UpstreamDns, 'a.test');
    assert.deepEqual((await ask()).ips, ['198.51.100.1']);
    for (let i = 0; i < 3; i++) {
      expire(ctx, 'a.test');
      assert.deepEqual((await ask()).ips, ['198.51.100.1']);
    }
    assert.equal(up.calls, 4);
  });

  test('concurrent lookups of one name share one upstream query; pins are bounded', async () => {
    const ctx = ctxOf(spec());
    const up = new Scripted([{ ips: ['198.51.100.1'], ttl: 60 }]);
    await Promise.all(Array.from({ length: 5 }, () => resolveFor(ctx, up as unknown as UpstreamDns, 'a.test')));
    assert.equal(up.calls, 1);
    for (let i = 0; i < MAX_PINS + 10; i++) await resolveFor(ctx, up as unknown as UpstreamDns, `n${i}.test`);
    assert.equal(ctx.pins.size, MAX_PINS);
    assert.equal(ctx.pins.has('a.test'), false, 'the oldest pin went first');
  });

  test('add-host names answer their address without asking upstream, allowed or not', async () => {
    const ctx = ctxOf(spec({ allow: ['other.test'], addHosts: [{ host: 'api.test', ip: '198.51.100.7' }] }));
    const up = new Scripted([new Error('must not be asked')]);
    assert.deepEqual(await resolveFor(ctx, up as unknown as UpstreamDns, 'api.test'), { ips: ['198.51.100.7'] });
    assert.equal(up.calls, 0);
  });
});

describe('policy: add-host only resolves', () => {
  const addHosts = [{ host: 'api.test', ip: '198.51.100.7' }, { host: 'db.test', ip: '10.1.2.3' }];
  test('allowlist: an add-host name is not reachable unless an allow entry names it', () => {
    const p = new Policy({ ...emptyNetwork('allowlist'), allow: ['other.test'], addHosts });
    assert.equal(p.name('api.test').allowed, true, 'it resolves');
    assert.equal(p.connection('api.test', '198.51.100.7', 443).allowed, false);
    const allowed = new Policy({ ...emptyNetwork('allowlist'), allow: ['other.test', 'api.test', 'db.test:5432'], addHosts });
    assert.equal(allowed.connection('api.test', '198.51.100.7', 443).allowed, true);
    assert.equal(allowed.connection('api.test', '198.51.100.7', 8080).allowed, false, 'ports are the allow entry\'s');
    assert.equal(allowed.connection('db.test', '10.1.2.3', 5432).allowed, true, 'a private address the user mapped and allowed');
    assert.equal(allowed.connection('db.test', '10.9.9.9', 5432).allowed, false, 'but not another private address for that name');
  });
  test('open: public add-host addresses on 80/443 like any name; private ones need an allow entry', () => {
    const p = new Policy({ ...emptyNetwork('open'), addHosts });
    assert.equal(p.connection('api.test', '198.51.100.7', 443).allowed, true);
    assert.equal(p.connection('api.test', '198.51.100.7', 8080).allowed, false);
    assert.equal(p.connection('db.test', '10.1.2.3', 443).allowed, false);
    assert.equal(new Policy({ ...emptyNetwork('open'), deny: ['api.test'], addHosts }).name('api.test').allowed, false, 'deny wins');
  });
});

describe('secrets', () => {
  const vars = secretEnvFrom(['ALLOWED_TOKEN'], { ALLOWED_TOKEN: 'from-the-daemon', PATH: '/usr/bin' });

  test('NAME@hosts takes only a variable the operator allowed', () => {
    assert.equal(parseSecret('ALLOWED_TOKEN@api.test', 'network.secrets[0]', vars).value, 'from-the-daemon');
    assert.throws(() => parseSecret('PATH@api.test', 'network.secrets[0]', vars), /--secret-env PATH/);
    assert.throws(() => parseSecret('PATH@api.test', 'network.secrets[0]'), /--secret-env PATH/);
    assert.equal(parseSecret('T=given@api.test', 'network.secrets[0]').value, 'given');
  });

  test('errors never repeat what may be a value', () => {
    const value = 'sk_live_4f8a9b2c7d';
    for (const bad of [value, `${value}@`, `bad name=${value}@api.test`, `T=${value}@api test`, `=${value}@api.test`]) {
      const e = (() => { try { parseSecret(bad, 'network.secrets[3]'); } catch (err) { return err as Error; } })();
      assert.ok(e, bad);
      assert.doesNotMatch(e.message, new RegExp(value), bad);
      assert.match(e.message, /network\.secrets\[3\]/);
    }
  });

  test('--secret-env names must be set', () => {
    assert.throws(() => secretEnvFrom(['MISSING'], {}), /\$MISSING is not set/);
    assert.throws(() => secretEnvFrom(['no-good'], {}), /variable name/);
  });
});

describe('leaf certificates in process', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cordon-ca-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('signed by the CA, cached, bounded, refreshed after the cache TTL; key files private', async () => {
    const ca = new CertAuthority(join(dir, 'a'), { maxLeaves: 3, cacheTtlMs: 60_000 });
    await ca.init();
    assert.equal(statSync(join(dir, 'a')).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, 'a', 'ca.key')).mode & 0o777, 0o600);
    const root = new X509Certificate(ca.caPem);
    const leaf = new X509Certificate(await ca.leaf('api.example.com'));
    assert.ok(leaf.verify(root.publicKey) && leaf.checkIssued(root));
    assert.equal(leaf.subjectAltName, 'DNS:api.example.com');
    assert.ok(new Date(leaf.validTo).getTime() > Date.now() + 2 * 86_400_000);
    assert.equal(await ca.leaf('api.example.com'), await ca.leaf('api.example.com'));
    assert.equal(ca.signed, 1);
    for (const h of ['a.test', 'b.test', 'c.test', 'd.test']) await ca.leaf(h);
    assert.equal(ca.cachedLeaves, 3, 'the cache is bounded');
    assert.equal(ca.signed, 5);
    await assert.rejects(ca.leaf('bad name'), /malformed/);

    const short = new CertAuthority(join(dir, 'a'), { cacheTtlMs: 1 });
    await short.init();
    assert.equal(short.caPem, ca.caPem, 'the CA is kept across starts');
    await short.leaf('x.test');
    await new Promise((r) => setTimeout(r, 5));
    await short.leaf('x.test');
    assert.equal(short.signed, 2, 'an expired cache entry is signed again');
  });

  test('a CA made by the openssl CLI (older daemons) is used as it is; its key is made 0600', async () => {
    const old = join(dir, 'old');
    await run('mkdir', ['-p', old]);
    const r = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '30', '-subj', '/CN=old cordon CA', '-keyout', join(old, 'ca.key'), '-out', join(old, 'ca.crt')]);
    assert.equal(r.code, 0, r.stderr);
    await run('chmod', ['0644', join(old, 'ca.key')]);
    await run('touch', [join(old, 'leaf.key')]);
    const ca = new CertAuthority(old);
    await ca.init();
    assert.equal(statSync(join(old, 'ca.key')).mode & 0o777, 0o600);
    assert.equal(existsSync(join(old, 'leaf.key')), false, 'no leaf key is kept on disk');
    assert.ok(new X509Certificate(await ca.leaf('a.test')).checkIssued(new X509Certificate(ca.caPem)));
  });
});

describe('daemon defaults and the port proxy', () => {
  test('--dns-server defaults to resolv.conf IPv4 servers, loopback and IPv6 skipped', () => {
    assert.deepEqual(resolvConfServers('# c\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch x\nnameserver 10.0.0.2\n nameserver 192.0.2.1 # x\n'), {
      usable: ['10.0.0.2', '192.0.2.1'],
      skipped: ['127.0.0.53', '::1'],
    });
    assert.deepEqual(resolvConfServers(''), { usable: [], skipped: [] });
  });

  test('the port proxy strips E2B and cordon credentials and the daemon API key', () => {
    const h = headersForSandbox(
      {
        host: '8000-abc.cordon', 'x-access-token': 't', 'e2b-sandbox-id': 'abc', 'e2b-sandbox-port': '8000', 'e2b-traffic-access-token': 't2',
        'x-cordon-trace': '1', authorization: 'Bearer daemon-key', 'x-api-key': 'daemon-key', 'x-keep': 'yes',
      },
      'daemon-key',
    );
    assert.deepEqual(h, { host: '8000-abc.cordon', 'x-keep': 'yes' });
    assert.equal(headersForSandbox({ authorization: 'Bearer app-token' }, 'daemon-key').authorization, 'Bearer app-token', "the app's own credentials pass");
    assert.equal(headersForSandbox({ authorization: 'Bearer app-token' }, undefined).authorization, 'Bearer app-token');
  });
});

describe('pins on disk and lookups in flight: what a sandbox resolving endless names costs', () => {
  test('pins are written at most once a second, not once per answer; flush writes at once', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cordon-pins-'));
    try {
      const file = join(dir, 'sb.json');
      const pins = SavedPins.load(file);
      for (let i = 0; i < 1000; i++) pins.set(`n${i}.test`, { ips: ['198.51.100.1'], expires: Date.now() + 60_000 });
      assert.equal(existsSync(file), false, 'nothing written synchronously per answer');
      pins.flush();
      assert.equal(Object.keys(JSON.parse(readFileSync(file, 'utf8'))).length, 1000);
      pins.discard();
      pins.set('late.test', { ips: ['198.51.100.2'], expires: 0 });
      pins.flush();
      assert.equal(Object.keys(JSON.parse(readFileSync(file, 'utf8'))).length, 1000, 'a discarded set writes nothing more');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('distinct names in flight upstream are capped per sandbox; a pinned name still answers', async () => {
    const spec: NetworkSpec = { ...emptyNetwork('open') };
    const ctx: ResolveContext = { policy: new Policy(spec), pins: new Map<string, Pin>([['old.test', { ips: ['198.51.100.9'], expires: 0 }]]), upstream: ['192.0.2.53'] };
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = { query: async () => (await gate, { ips: ['198.51.100.1'], ttl: 60 }) } as unknown as UpstreamDns;
    const first = Array.from({ length: MAX_LOOKUPS_PER_SANDBOX }, (_, i) => resolveFor(ctx, slow, `n${i}.test`));
    await assert.rejects(resolveFor(ctx, slow, 'one-more.test'), /too many DNS lookups in flight/);
    assert.deepEqual((await resolveFor(ctx, slow, 'old.test')).ips, ['198.51.100.9'], 'an expired pin answers while upstream is busy');
    release();
    await Promise.all(first);
    assert.deepEqual((await resolveFor(ctx, slow, 'one-more.test')).ips, ['198.51.100.1']);
  });
});
