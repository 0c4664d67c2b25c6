// Template builds and the network: RUN steps have none unless the build gives them a policy, and then
// exactly that policy (a fake internet in its own namespace; nothing leaves the machine).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { startFakeInternet, type FakeInternet } from './helpers/net-fake-internet.js';

const SLOT = 31;
let d: TestDaemon;
let fi: FakeInternet;
let work: string;

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/tmpl-net-');
  fi = await startFakeInternet(SLOT);
  d = await startDaemon('template-build-net', { args: fi.daemonArgs(SLOT) });
});

after(async () => {
  for (const s of (await d?.client.list().catch(() => [])) ?? []) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d?.cleanup();
  await fi?.close();
  rmSync(work, { recursive: true, force: true });
});

function context(name: string, dockerfile: string): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Dockerfile'), dockerfile);
  return dir;
}

describe('template build network', () => {
  const fetchStep = 'FROM base\nRUN curl -sS --max-time 8 http://api.test/from-build > /fetched.json\n';

  it('RUN steps have no network by default', async () => {
    const r = await cli(d, ['template', 'build', 'nonet', '--context', context('nonet', fetchStep)]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /step 2 \(RUN curl .*\) failed/);
  });

  it('with --allow-host a RUN step reaches that host and nothing else', async () => {
    const r = await cli(d, ['template', 'build', 'withnet', '--context', context('withnet', fetchStep), '--allow-host', 'api.test']);
    assert.equal(r.code, 0, r.stderr);
    const sbx = await d.client.create({ template: 'withnet' });
    try {
      assert.equal(JSON.parse((await sbx.exec(['cat', '/fetched.json'])).stdout).url, '/from-build');
    } finally {
      await sbx.remove({ force: true });
    }
    const other = await cli(d, ['template', 'build', 'othernet', '--context', context('othernet', 'FROM base\nRUN curl -sS --max-time 8 https://other.test/\n'), '--allow-host', 'api.test']);
    assert.notEqual(other.code, 0, 'other.test is not in the allowlist');
  });
});
