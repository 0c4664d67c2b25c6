// The base template when the Debian mirror cannot be reached: it is built from this host's installed
// packages (repacked into a local repository) instead of failing every create. The "mirror" here is a
// closed loopback port, so nothing leaves the machine.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { controlFromStatus } from '../src/image/host-repack.js';
import { parseRelations, resolveClosure, type InstalledPackage } from '../src/image/host-packages.js';
import { freePort, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { until } from './helpers/assert.js';

const pkg = (name: string, depends: string[][] = [], extra: Partial<InstalledPackage> = {}): InstalledPackage => ({
  ref: name,
  name,
  arch: 'amd64',
  version: '1',
  essential: false,
  priority: 'optional',
  provides: [],
  depends,
  ...extra,
});

describe('host package closure (unit)', () => {
  test('relations: alternatives, versions and arch qualifiers', () => {
    assert.deepEqual(parseRelations('libc6 (>= 2.34), perl:any | perl-base, awk'), [['libc6'], ['perl', 'perl-base'], ['awk']]);
    assert.deepEqual(parseRelations(''), []);
  });

  test('closure: essential and required seeds, first installed alternative, virtual packages, missing names', () => {
    const installed = [
      pkg('dash', [], { essential: true }),
      pkg('mawk', [], { provides: ['awk'], priority: 'required' }),
      pkg('apt', [['libapt']]),
      pkg('libapt'),
      pkg('python3', [['python3-minimal'], ['awk']]),
      pkg('python3-minimal'),
      pkg('usr-is-merged'),
      pkg('init', [['usrmerge', 'usr-is-merged']], { essential: true }),
      pkg('unrelated'),
      pkg('foreign', [], { arch: 'arm64' }),
    ];
    const c = resolveClosure(installed, ['python3', 'sudo', 'foreign']);
    assert.deepEqual(c.packages.map((p) => p.name), ['apt', 'dash', 'init', 'libapt', 'mawk', 'python3', 'python3-minimal', 'usr-is-merged']);
    assert.deepEqual(c.missing, ['foreign', 'sudo']);
  });

  test('control: installed state dropped, live conffiles kept, continuation lines follow their field', () => {
    const status = [
      'Package: demo',
      'Status: install ok installed',
      'Version: 1.0',
      'Conffiles:',
      ' /etc/demo.conf 0123abcd',
      ' /etc/old.conf 4567ef obsolete',
      'Description: a demo',
      ' with a second line',
      'Config-Version: 0.9',
      '',
    ].join('\n');
    const r = controlFromStatus(status);
    assert.equal(r.control, 'Package: demo\nVersion: 1.0\nDescription: a demo\n with a second line\n');
    assert.deepEqual(r.conffiles, ['/etc/demo.conf']);
  });
});

describe('base template with an unreachable mirror', () => {
  let d: TestDaemon;
  const templates = `/var/lib/cordon-test/base-offline-templates-${process.pid}`;

  before(async () => {
    rmSync(templates, { recursive: true, force: true });
    const closed = await freePort();
    d = await startDaemon('base-offline', { args: ['--templates-dir', templates, '--debian-mirror', `http://127.0.0.1:${closed}/debian`] });
  });
  after(async () => {
    for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
    await d.cleanup();
    rmSync(templates, { recursive: true, force: true });
  });

  test('is built from the host packages, says so, and runs what base promises', { timeout: 900_000 }, async () => {
    await until('the base template build to end', () => /template base ready|building template base failed/.test(d.log()), 600_000);
    assert.match(d.log(), /cannot be reached \(ECONNREFUSED\); building from this host's installed packages/);
    assert.match(d.log(), /template base ready/);
    const recipe = JSON.parse(readFileSync(`${templates}/${readdirBase(templates)}/recipe.json`, 'utf8'));
    assert.equal(recipe.source, 'host-packages');

    const s = await d.client.create({ runtime: 'crun' });
    try {
      const r = await s.exec(['sh', '-c', 'python3 -c "print(6*7)" && node -e "console.log(1+1)" && git --version >/dev/null && id -u user && ls -ld /bin']);
      assert.equal(r.exit_code, 0, r.stderr);
      const [py, node, uid, bin] = r.stdout.trim().split('\n');
      assert.equal(py, '42');
      assert.equal(node, '2');
      assert.equal(uid, '1000');
      assert.match(bin, /\/bin -> usr\/bin/);
      // Whatever this host lacks is named in the recipe rather than faked.
      const sudo = await s.exec(['sh', '-c', 'command -v sudo || echo none']);
      assert.equal(sudo.stdout.trim() === 'none', recipe.missing.includes('sudo'));
    } finally {
      await s.remove().catch(() => {});
    }
  });
});

function readdirBase(dir: string): string {
  const hit = readdirSync(dir).find((f) => /^base-[0-9a-f]+$/.test(f));
  assert.ok(hit, `no base-* directory in ${dir}`);
  return hit;
}
