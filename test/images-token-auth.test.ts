import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { APP_CONFIG, appEntries, baseEntries, layerTar, push, writeLayout, type Built } from './helpers/oci-image.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';

// Bearer token auth end to end. A token gate written here sits in front of a real docker-registry
// on loopback, the way Docker Hub or GHCR do: every /v2/ request needs `Authorization: Bearer`,
// else 401 with a challenge naming the realm, service and scope; the realm checks Basic credentials
// and the scope and hands out a short-lived random token; blob GETs are redirected to a "storage"
// listener on another port (like S3 behind Docker Hub). Public repositories get their tokens from
// a separate auth listener (like auth.docker.io), anonymously.

const SERVICE = 'cordon-gate';
const USER = 'tester';
const PASSWORD = 'c0rrect-horse';

interface Gate {
  /** The registry address pulls use (host:port), serving /v2/ and its own /token realm. */
  host: string;
  /** A separate token service for public repositories. */
  authHost: string;
  storageHost: string;
  /** Every /v2/ request the gate saw, with its Authorization header. */
  v2: { path: string; auth?: string }[];
  tokenRequests: { host: string; scopes: string[]; auth?: string; granted: string[] }[];
  storage: { path: string; auth?: string }[];
  /** Bearer tokens presented on /v2/ and refused (unknown, expired or lacking the scope). */
  refused: number;
  /** How many /v2/ requests a token is good for (a stand-in for expiry that needs no clock). */
  usesPerToken: number;
  close(): Promise<void>;
}

async function listen(handler: (req: IncomingMessage, res: ServerResponse, url: URL) => void): Promise<{ server: Server; host: string }> {
  const server = createServer((req, res) => {
    try {
      handler(req, res, new URL(req.url ?? '/', 'http://gate'));
    } catch (e) {
      res.writeHead(500).end(String(e));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, host: `127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** Stream a request on to the real registry, without the client's Authorization. */
function forward(upstream: string, req: IncomingMessage, res: ServerResponse, path: string): void {
  const [hostname, port] = upstream.split(':');
  const headers: Record<string, string> = { accept: String(req.headers.accept ?? '*/*') };
  if (req.headers.range) headers.range = String(req.headers.range);
  const up = httpRequest({ hostname, port: Number(port), method: req.method, path, headers }, (ur) => {
    res.writeHead(ur.statusCode ?? 502, ur.headers);
    ur.pipe(res);
  });
  up.on('error', (e) => res.destroy(e));
  up.end();
}

async function startGate(upstream: string, users: Record<string, { password: string; repos: string[] }>, publicRepos: string[]): Promise<Gate> {
  const tokens = new Map<string, { scopes: Set<string>; expires: number; uses: number }>();
  const key = randomBytes(32);
  const sign = (s: string) => createHmac('sha256', key).update(s).digest('hex');
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));

  const tokenEndpoint = (req: IncomingMessage, res: ServerResponse, url: URL, host: string) => {
    if (url.searchParams.get('service') !== SERVICE) return json(res, 400, { details: 'unknown service' });
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    const auth = req.headers.authorization;
    let user: string | undefined;
    if (auth !== undefined) {
      const b = /^Basic (\S+)$/.exec(auth);
      const text = b ? Buffer.from(b[1], 'base64').toString('utf8') : '';
      const i = text.indexOf(':');
      user = text.slice(0, i);
      if (i < 0 || users[user]?.password !== text.slice(i + 1)) {
        gate.tokenRequests.push({ host, scopes, auth, granted: [] });
        return json(res, 401, { details: 'incorrect username or password' }, { 'www-authenticate': `Basic realm="${SERVICE}"` });
      }
    }
    // Like Docker's token servers: a valid login always gets a token, holding only the scopes it may have.
    const granted = scopes.flatMap((s) => {
      const m = /^repository:([^:]+):([a-z,*]+)$/.exec(s);
      const ok = m && m[2].split(',').includes('pull') && (publicRepos.includes(m[1]) || (user !== undefined && users[user].repos.includes(m[1])));
      return ok ? [`repository:${m[1]}:pull`] : [];
    });
    gate.tokenRequests.push({ host, scopes, auth, granted });
    const token = randomBytes(24).toString('base64url');
    tokens.set(token, { scopes: new Set(granted), expires: Date.now() + 300_000, uses: gate.usesPerToken });
    // Both answer shapes in use: {token} (Docker Hub, distribution) and {access_token} (OAuth2 style).
    json(res, 200, user ? { token, expires_in: 300, issued_at: new Date().toISOString() } : { access_token: token, expires_in: 300 });
  };

  const api = await listen((req, res, url) => {
    if (url.pathname === '/token') return tokenEndpoint(req, res, url, api.host);
    if (!url.pathname.startsWith('/v2/')) return json(res, 404, {});
    gate.v2.push({ path: url.pathname, auth: req.headers.authorization });
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    const scope = m ? `repository:${m[1]}:pull` : undefined;
    const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    const grant = bearer ? tokens.get(bearer) : undefined;
    if (!grant || grant.expires < Date.now() || grant.uses <= 0 || (scope && !grant.scopes.has(scope))) {
      if (bearer) gate.refused++;
      const realm = m && publicRepos.includes(m[1]) ? `http://${auth.host}/token` : `http://${api.host}/token`;
      const challenge = `Bearer realm="${realm}",service="${SERVICE}"${scope ? `,scope="${scope}"` : ''}`;
      return json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }, { 'www-authenticate': challenge });
    }
    grant.uses--;
    if (!m) return json(res, 200, {});
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { errors: [{ code: 'UNSUPPORTED' }] });
    if (m[2] === 'blobs' && req.method === 'GET') {
      const where = `/blob/${m[1]}/${m[3]}`;
      return res.writeHead(307, { location: `http://${storage.host}${where}?sig=${sign(where)}` }).end();
    }
    forward(upstream, req, res, url.pathname);
  });
  const auth = await listen((req, res, url) => (url.pathname === '/token' ? tokenEndpoint(req, res, url, auth.host) : json(res, 404, {})));
  const storage = await listen((req, res, url) => {
    gate.storage.push({ path: url.pathname, auth: req.headers.authorization });
    const m = /^\/blob\/(.+)\/([^/]+)$/.exec(url.pathname);
    if (!m || url.searchParams.get('sig') !== sign(url.pathname)) return json(res, 403, { details: 'bad signature' });
    forward(upstream, req, res, `/v2/${m[1]}/blobs/${m[2]}`);
  });

  const gate: Gate = {
    host: api.host,
    authHost: auth.host,
    storageHost: storage.host,
    v2: [],
    tokenRequests: [],
    storage: [],
    refused: 0,
    usesPerToken: Number.MAX_SAFE_INTEGER,
    async close() {
      for (const s of [api.server, auth.server, storage.server]) {
        s.closeAllConnections();
        await new Promise((r) => s.close(r));
      }
    },
  };
  return gate;
}

let reg: TestRegistry;
let gate: Gate;
let d: TestDaemon;
let work: string;
let app: Built;
let renew: Built;

const layerCount = () => (existsSync(join(d.dataDir, 'images', 'layers')) ? readdirSync(join(d.dataDir, 'images', 'layers')).length : 0);
const tmpEmpty = () => !existsSync(join(d.dataDir, 'images', 'tmp')) || readdirSync(join(d.dataDir, 'images', 'tmp')).length === 0;
const stored = async (name: string) => ((await d.client.images.list()) as { name: string }[]).some((i) => i.name === name);
const pullWith = (ref: string, password?: string, user = USER) =>
  cli(d, ['image', 'pull', '--json', ...(password !== undefined ? ['--username', user, '--password-stdin'] : []), ref], password !== undefined ? `${password}\n` : undefined);
/** With --json the CLI reports a failure on stdout as {error: {code, message}}. */
const failure = (r: { stdout: string }) => (JSON.parse(r.stdout) as { error: { code: string; message: string } }).error;

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/imgtoken-');
  reg = await startRegistry('token');
  d = await startDaemon('images-token');
  const base = await layerTar(baseEntries());
  app = writeLayout(join(work, 'app'), { layers: [{ tar: base, compression: 'gzip' }, { tar: await layerTar(appEntries()), compression: 'zstd' }], config: APP_CONFIG });
  // Images go straight into the registry; only pulls pass the gate.
  for (const repo of ['private/app', 'private/secret', 'public/app']) push(join(work, 'app'), `${reg.host}/${repo}:1`);
  renew = writeLayout(join(work, 'renew'), { layers: [{ tar: base, compression: 'gzip' }, { tar: await layerTar([{ name: 'renew.txt', content: randomBytes(64 * 1024).toString('hex') }]), compression: 'gzip' }], config: { Cmd: ['/bin/sh'] } });
  push(join(work, 'renew'), `${reg.host}/private/renew:1`);
  gate = await startGate(reg.host, { [USER]: { password: PASSWORD, repos: ['private/app', 'private/renew'] } }, ['public/app']);
});

after(async () => {
  await d?.cleanup();
  await gate?.close();
  await reg?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('image pull with Bearer token auth', () => {
  it('refuses a wrong password or no credentials with exit 77 and stores nothing', async () => {
    const ref = `${gate.host}/private/app:1`;
    const wrong = await pullWith(ref, 'not-the-password');
    assert.equal(wrong.code, 77, wrong.stderr);
    assert.equal(failure(wrong).code, 'unauthenticated');
    assert.match(failure(wrong).message, /refused the credentials/);
    const asked = gate.tokenRequests.at(-1)!;
    assert.ok(asked.auth?.startsWith('Basic '), 'the credentials went to the realm');
    assert.deepEqual(asked.scopes, ['repository:private/app:pull']);
    const anon = await pullWith(ref);
    assert.equal(anon.code, 77, anon.stderr);
    assert.match(failure(anon).message, /denied access/);
    assert.equal(gate.tokenRequests.at(-1)!.auth, undefined, 'no credentials means an anonymous token request');
    assert.equal(await stored(ref), false);
    assert.equal(layerCount(), 0);
    assert.equal(gate.storage.length, 0, 'no blob was handed out');
    assert.ok(tmpEmpty());
  });

  it('pulls with the right credentials, lists the image and runs a sandbox from it', async () => {
    const ref = `${gate.host}/private/app:1`;
    const tokensBefore = gate.tokenRequests.length;
    const r = await pullWith(ref, PASSWORD);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(JSON.parse(r.stdout).id, app.configDigest);
    const ls = JSON.parse((await cli(d, ['image', 'ls', '--json'])).stdout) as { name: string; id: string }[];
    assert.ok(ls.some((i) => i.name === ref && i.id === app.configDigest), JSON.stringify(ls));
    const issued = gate.tokenRequests.slice(tokensBefore);
    assert.ok(issued.length >= 1);
    for (const t of issued) {
      assert.equal(t.host, gate.host, 'the realm of a private repo is the gate itself');
      assert.deepEqual(t.granted, ['repository:private/app:pull']);
    }
    // The config and both layers came through the redirect to the storage listener.
    const blobs = gate.storage.map((s) => s.path.split('/').pop());
    for (const dg of [app.configDigest, ...app.layerDigests]) assert.ok(blobs.includes(dg), `blob ${dg} fetched via the redirect`);
    const run = await cli(d, ['run', '--runtime', RUNTIMES[0], '--image', ref]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^greeting:hi from image$/m);
    assert.match(run.stdout, /^uid:1000$/m);
  });

  it('fails cleanly when the token does not cover the repository', async () => {
    const ref = `${gate.host}/private/secret:1`;
    const refused = gate.refused;
    const layers = layerCount();
    const r = await pullWith(ref, PASSWORD);
    assert.equal(r.code, 77, r.stderr);
    assert.equal(failure(r).code, 'unauthenticated');
    assert.match(failure(r).message, /denied access to .*private\/secret/);
    const t = gate.tokenRequests.at(-1)!;
    assert.deepEqual(t.scopes, ['repository:private/secret:pull']);
    assert.deepEqual(t.granted, [], 'the login is valid, but not for this repository');
    assert.ok(gate.refused > refused, 'the gate saw the token and refused it');
    assert.equal(await stored(ref), false);
    assert.equal(layerCount(), layers);
    assert.ok(tmpEmpty());
    // The daemon is fine afterwards.
    assert.equal((await cli(d, ['image', 'ls', '--json'])).code, 0);
  });

  it('pulls a public repository with an anonymous token from a separate auth service', async () => {
    const ref = `${gate.host}/public/app:1`;
    const tokensBefore = gate.tokenRequests.length;
    const v2Before = gate.v2.length;
    const r = await pullWith(ref);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(JSON.parse(r.stdout).id, app.configDigest);
    assert.ok(await stored(ref));
    const issued = gate.tokenRequests.slice(tokensBefore);
    assert.ok(issued.length >= 1);
    for (const t of issued) {
      assert.equal(t.host, gate.authHost);
      assert.equal(t.auth, undefined);
      assert.deepEqual(t.granted, ['repository:public/app:pull']);
    }
    assert.ok(gate.v2.slice(v2Before).some((v) => v.auth?.startsWith('Bearer ')), 'the registry saw the anonymous token');
  });

  it('gets a new token when the one it holds expires mid-pull', async () => {
    gate.usesPerToken = 1;
    try {
      const ref = `${gate.host}/private/renew:1`;
      const tokensBefore = gate.tokenRequests.length;
      const r = await pullWith(ref, PASSWORD);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(JSON.parse(r.stdout).id, renew.configDigest);
      // Manifest, config and the one new layer: each needs a fresh token.
      assert.ok(gate.tokenRequests.length - tokensBefore >= 3, `${gate.tokenRequests.length - tokensBefore} tokens issued`);
    } finally {
      gate.usesPerToken = Number.MAX_SAFE_INTEGER;
    }
  });

  it('never sends the Basic credentials to the registry or storage endpoints', () => {
    assert.ok(gate.tokenRequests.some((t) => t.auth?.startsWith('Basic ')), 'credentials were used (at the realm)');
    assert.ok(gate.v2.length > 0 && gate.storage.length > 0);
    for (const v of gate.v2) assert.ok(v.auth === undefined || /^Bearer \S+$/.test(v.auth), `${v.path} carried ${v.auth}`);
    assert.ok(gate.v2.some((v) => v.auth !== undefined));
    for (const s of gate.storage) assert.equal(s.auth, undefined, `${s.path} (another host) carried ${s.auth}`);
  });
});
