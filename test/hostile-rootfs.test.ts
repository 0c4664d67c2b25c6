// The host never reads what a sandbox or an image controls: a CA bundle that is a symlink to
// /etc/shadow, an /etc/passwd that is a FIFO (in the image, or made by root inside a running sandbox),
// a 200 MiB passwd, passwd symlinks; and images without /etc/passwd run as Docker runs them.
// Uses the fake internet (network slot 23): run under flock /tmp/cordon-net-tests.lock.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { rejectsWith } from './helpers/assert.js';
import { cli, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, tearDownNetSuite, type FakeInternet } from './helpers/net-fake-internet.js';
import { baseEntries, layerTar, writeLayout, type Entry } from './helpers/oci-image.js';

const SLOT = 24;
const MiB = 1024 * 1024;
let d: TestDaemon;
let fi: FakeInternet;
let work: string;

const IMAGES = { caEscape: 'hostile/ca-escape:1', caInRoot: 'hostile/ca-in-root:1', fifoPasswd: 'hostile/fifo-passwd:1', noPasswd: 'hostile/no-passwd:1' };
const withoutAccounts = () => baseEntries().filter((e) => e.name !== 'etc/passwd' && e.name !== 'etc/group');
const certDirs: Entry[] = [{ name: 'etc/ssl', type: 'directory' }, { name: 'etc/ssl/certs', type: 'directory' }];
/** The base64 bodies of the PEM certificates in a text, to compare bundles whatever their layout. */
const SEP = '=== next file ===';
const pemBodies = (text: string) => [...text.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)].map((m) => m[1].replace(/\s+/g, ''));
const peakRssBytes = (pid: number) => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

async function importImage(name: string, entries: Entry[][], config: Record<string, unknown> = { Env: ['PATH=/bin'] }): Promise<void> {
  const dir = join(work, name.replace(/[/:]/g, '_'));
  writeLayout(dir, { layers: await Promise.all(entries.map(async (e) => ({ tar: await layerTar(e), compression: 'gzip' as const }))), config });
  const r = await cli(d, ['image', 'import', '--name', name, dir]);
  assert.equal(r.code, 0, r.stderr);
}

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/hostile-rootfs-');
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('hostile-rootfs', { args: fi.daemonArgs(SLOT) });
  await importImage(IMAGES.caEscape, [baseEntries(), [...certDirs, { name: 'etc/ssl/certs/ca-certificates.crt', type: 'symlink', linkname: '/etc/shadow' }]]);
  // A Fedora-like layout: the well-known path is a relative symlink to the real bundle elsewhere.
  await importImage(IMAGES.caInRoot, [baseEntries(), [
    ...certDirs,
    { name: 'etc/pki', type: 'directory' },
    { name: 'etc/pki/bundle.pem', content: `# image bundle\n${readFileSync(fi.caFile, 'utf8')}\nnot a certificate: keep out\n` },
    { name: 'etc/ssl/certs/ca-certificates.crt', type: 'symlink', linkname: '../../pki/bundle.pem' },
  ]]);
  await importImage(IMAGES.fifoPasswd, [[...withoutAccounts(), { name: 'etc/passwd', type: 'fifo' }, { name: 'etc/group', type: 'fifo' }]], { Env: ['PATH=/bin'], Cmd: ['/bin/sleep', '600'] });
  await importImage(IMAGES.noPasswd, [withoutAccounts()]);
});

after(async () => {
  await tearDownNetSuite(d, SLOT, fi);
  if (work) rmSync(work, { recursive: true, force: true });
});

async function healthy(): Promise<void> {
  const res = await fetch(`${d.url}/v1/health`);
  assert.equal(res.status, 200);
}

for (const runtime of RUNTIMES) {
  describe(`hostile rootfs on ${runtime}`, () => {
    test('a CA bundle path that is a symlink to /etc/shadow shows nothing of the host', { timeout: 180_000 }, async () => {
      const hostShadow = readFileSync('/etc/shadow', 'utf8').split('\n').filter((l) => l.includes(':'));
      const sb = await d.client.create({ runtime, image: IMAGES.caEscape, network: { allow_hosts: ['api.test'] } });
      try {
        const daemonCa = pemBodies(readFileSync(join(d.dataDir, 'net-ca', 'ca.crt'), 'utf8'));
        const r = await sb.exec(['/bin/sh', '-c', `cat /etc/ssl/certs/ca-certificates.crt; echo ${SEP}; cat "$SSL_CERT_FILE"`]);
        for (const line of hostShadow) assert.ok(!r.stdout.includes(line), 'a line of the host /etc/shadow is visible in the sandbox');
        assert.ok(!/^[a-z_][a-z0-9_-]*:[^:\n]*:\d*:/m.test(r.stdout), `something shadow-like is visible:\n${r.stdout}`);
        const [, trusted] = r.stdout.split(`${SEP}\n`);
        assert.deepEqual(pemBodies(trusted), daemonCa, 'SSL_CERT_FILE holds the daemon CA');
        assert.ok(!d.log().includes(hostShadow[0] ?? '\0'), 'the daemon log shows nothing of /etc/shadow either');
      } finally {
        await sb.remove({ force: true });
      }
    });

    test('a bundle symlinked elsewhere inside the image is merged and mounted where it really is', { timeout: 180_000 }, async () => {
      const imageCa = pemBodies(readFileSync(fi.caFile, 'utf8'));
      const sb = await d.client.create({ runtime, image: IMAGES.caInRoot, network: { allow_hosts: ['api.test'] } });
      try {
        const daemonCa = pemBodies(readFileSync(join(d.dataDir, 'net-ca', 'ca.crt'), 'utf8'));
        const r = await sb.exec(['/bin/sh', '-c', `cat /etc/ssl/certs/ca-certificates.crt; echo ${SEP}; cat /etc/pki/bundle.pem; echo ${SEP}; cat "$SSL_CERT_FILE"`]);
        assert.equal(r.exit_code, 0, r.stderr);
        const [viaLink, real, env] = r.stdout.split(`${SEP}\n`);
        for (const text of [viaLink, real, env]) assert.deepEqual(pemBodies(text), [...imageCa, ...daemonCa]);
        assert.ok(!r.stdout.includes('keep out'), 'only certificate blocks are copied');
      } finally {
        await sb.remove({ force: true });
      }
    });

    test('an image whose /etc/passwd and /etc/group are FIFOs: create and exec return, names fail clearly', { timeout: 180_000 }, async () => {
      const sb = await d.client.create({ runtime, image: IMAGES.fifoPasswd });
      // Not `id`: it looks names up in the FIFO itself, inside the sandbox, and would wait for a writer.
      const ids = async (user?: string) => {
        const status = (await sb.exec(['/bin/cat', '/proc/self/status'], { user })).stdout;
        return [/^Uid:\s+(\d+)/m.exec(status)?.[1], /^Gid:\s+(\d+)/m.exec(status)?.[1]].join(':');
      };
      try {
        assert.equal(await ids(), '0:0');
        await rejectsWith(sb.exec(['/bin/cat', '/proc/self/status'], { user: 'app' }), 'invalid_argument', /"app" cannot be looked up because \/etc\/passwd in the sandbox is a FIFO, not a regular file/);
        assert.equal(await ids('1000:1000'), '1000:1000');
        await healthy();
      } finally {
        await sb.remove({ force: true });
      }
    });

    test('root inside replaces /etc/passwd with a FIFO, a 200 MiB file and symlinks: execs stay prompt and inside', { timeout: 300_000 }, async () => {
      const sb: Sandbox = await d.client.create({ runtime });
      const asRoot = async (script: string) => {
        const r = await sb.exec(['sh', '-c', script], { user: '0' });
        assert.equal(r.exit_code, 0, r.stderr);
        return r.stdout;
      };
      // The full path: under runsc a non-root command runs through a busybox shell, whose own `id`
      // applet would be picked for a bare `id` and would wait on the FIFO inside the sandbox.
      const uidOf = async (user?: string) => (await sb.exec(['/usr/bin/id', '-u'], { user })).stdout;
      const peakBefore = peakRssBytes(d.proc.pid!);
      try {
        await asRoot('rm -f /etc/passwd /etc/group && mkfifo /etc/passwd /etc/group');
        assert.equal(await uidOf(), '0\n');
        // gVisor keeps a FIFO made inside in its own memory: the host sees the file removed.
        const gone = runtime === 'runsc' ? /because (\/etc\/passwd in the sandbox is a FIFO|the sandbox has no \/etc\/passwd)/ : /because \/etc\/passwd in the sandbox is a FIFO/;
        await rejectsWith(sb.exec(['id'], { user: 'user' }), 'invalid_argument', gone);
        assert.equal(await uidOf('1000'), '1000\n');
        await healthy();

        await asRoot('rm -f /etc/passwd && truncate -s 200M /etc/passwd');
        assert.equal(await uidOf(), '0\n');
        await rejectsWith(sb.exec(['id'], { user: 'user' }), 'invalid_argument', /\/etc\/passwd in the sandbox is larger than/);
        const grown = peakRssBytes(d.proc.pid!) - peakBefore;
        assert.ok(grown < 100 * MiB, `the daemon's peak RSS grew by ${Math.round(grown / MiB)} MiB`);

        // An absolute symlink resolves in the sandbox's root: /etc/cordon-passwd does not exist on the host.
        await asRoot(`rm -f /etc/passwd && printf 'user:x:4321:4321::/home/user:/bin/sh\\n' > /etc/cordon-passwd && ln -sf /etc/cordon-passwd /etc/passwd`);
        assert.equal(await uidOf('user'), '4321\n');

        // /etc/passwd -> /etc/shadow: the sandbox's own shadow (its "uid" column is the last change
        // day), never the host's, which has no "user" at all.
        const lastChange = /^user:[^:]*:(\d+):/m.exec(await asRoot('cat /etc/shadow'))?.[1];
        assert.ok(lastChange, 'the template has a shadow entry for user');
        await asRoot('ln -sf /etc/shadow /etc/passwd');
        assert.equal(await uidOf('user'), `${lastChange}\n`);
        await healthy();
      } finally {
        await sb.remove({ force: true });
      }
    });

    test('a tree deeper than PATH_MAX made inside is deleted with the sandbox', { timeout: 300_000 }, async () => {
      const sb = await d.client.create({ runtime });
      // Relative mkdir + chdir: each path given to the kernel is short, the tree is ~10 KiB deep.
      const deep = ['import os', "os.chdir('/tmp')", 'for i in range(200):', "    os.mkdir('d' * 50)", "    os.chdir('d' * 50)", "open('f', 'w').write('deep')"].join('\n');
      const r = await sb.exec(['python3', '-c', deep], { timeout: 240 });
      assert.equal(r.exit_code, 0, r.stderr);
      await sb.remove({ force: true });
      assert.equal(existsSync(join(d.dataDir, 'sandboxes', sb.id)), false, 'nothing of the sandbox stays on disk');
      await rejectsWith(d.client.get(sb.id), 'not_found');
    });

    test('an image without /etc/passwd runs as root by default and takes numeric users', { timeout: 180_000 }, async () => {
      const run = (args: string[]) => cli(d, ['run', '--runtime', runtime, '--image', IMAGES.noPasswd, ...args]);
      const def = await run(['--', '/bin/sh', '-c', 'id -u; id -g; echo $HOME']);
      assert.equal(def.code, 0, def.stderr);
      assert.equal(def.stdout, '0\n0\n/\n');
      const both = await run(['--user', '1234:5678', '--', '/bin/sh', '-c', 'id -u; id -g']);
      assert.equal(both.code, 0, both.stderr);
      assert.equal(both.stdout, '1234\n5678\n');
      const uidOnly = await run(['--user', '1234', '--', '/bin/sh', '-c', 'id -u; id -g']);
      assert.equal(uidOnly.code, 0, uidOnly.stderr);
      assert.equal(uidOnly.stdout, '1234\n0\n', 'a bare numeric uid without an entry gets gid 0, as with Docker');
      const named = await run(['--user', 'app', '--', '/bin/id']);
      assert.equal(named.code, 64, named.stdout + named.stderr);
      assert.match(named.stderr, /"app" cannot be looked up because the sandbox has no \/etc\/passwd; use a numeric uid/);
    });
  });
}
