import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { APP_CONFIG, appEntries, baseEntries, dockerArchive, layerTar, push, writeLayout } from './helpers/oci-image.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';

// Images pulled from a loopback registry (or imported) run in sandboxes with Docker's config semantics.

let reg: TestRegistry;
let d: TestDaemon;
let work: string;
let ref: string;

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/imgrun-');
  reg = await startRegistry('run');
  d = await startDaemon('images-run');
  writeLayout(join(work, 'app'), { layers: [{ tar: await layerTar(baseEntries()), compression: 'gzip' }, { tar: await layerTar(appEntries()), compression: 'zstd' }], config: APP_CONFIG }, { refName: 'latest' });
  ref = `${reg.host}/test/app:1`;
  push(join(work, 'app'), ref);
});

after(async () => {
  await d?.cleanup();
  await reg?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

for (const runtime of RUNTIMES) {
  describe(`an image-based sandbox on ${runtime}`, () => {
    it('runs Entrypoint + Cmd with the image Env, WorkingDir and User', async () => {
      const r = await cli(d, ['run', '--runtime', runtime, '--image', ref]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^args:default-arg$/m);
      assert.match(r.stdout, /^uid:1000$/m);
      assert.match(r.stdout, /^pwd:\/app$/m);
      assert.match(r.stdout, /^greeting:hi from image$/m);
    });

    it('replaces Cmd with user arguments and honours --entrypoint', async () => {
      const args = await cli(d, ['run', '--runtime', runtime, '--image', ref, '--', 'one', 'two']);
      assert.match(args.stdout, /^args:one two$/m);
      const ep = await cli(d, ['run', '--runtime', runtime, '--image', ref, '--entrypoint', '/bin/echo', '--', 'plain']);
      assert.equal(ep.code, 0, ep.stderr);
      assert.equal(ep.stdout, 'plain\n');
      const env = await cli(d, ['run', '--runtime', runtime, '--image', ref, '-e', 'GREETING=overridden', '-u', 'root']);
      assert.match(env.stdout, /^greeting:overridden$/m);
      assert.match(env.stdout, /^uid:0$/m);
    });

    it('starts the image default command as main on create and shows the layers as Docker would', async () => {
      const sbx = await d.client.create({ image: ref, runtime });
      try {
        const ps = await sbx.processes();
        const main = ps.find((p) => p.tag === 'main');
        assert.deepEqual(main?.cmd, ['/app/run.sh', 'default-arg']);
        const ls = await sbx.exec(['/bin/sh', '-c', 'ls /etc; echo ---; ls /data; echo ---; cat /app/hello-link.txt; stat -c %a /app/suid; stat -c %F /app/null']);
        assert.equal(ls.exit_code, 0, ls.stderr);
        const [etc, data, rest] = ls.stdout.split('---\n');
        assert.ok(!etc.includes('old.txt'), 'whiteout hides the lower file');
        assert.deepEqual(data.trim().split('\n'), ['b.txt'], 'opaque dir hides the lower contents');
        assert.match(rest, /^hello\n4755\ncharacter special file\n$/);
        const inUse = await cli(d, ['image', 'rm', ref]);
        assert.equal(inUse.code, 65, 'an image in use is not removed');
        await d.client.images.prune();
        const again = await sbx.exec(['/bin/cat', '/app/hello.txt']);
        assert.equal(again.stdout, 'hello\n');
      } finally {
        await sbx.remove({ force: true });
      }
    });
  });
}

describe('pull policy on create', () => {
  it('never: a missing image is refused with 404 and nothing is created', async () => {
    const before = (await d.client.list()).length;
    const r = await cli(d, ['create', '--image', `${reg.host}/test/absent:1`, '--pull', 'never', '--json']);
    assert.equal(r.code, 66, r.stdout + r.stderr);
    assert.equal(JSON.parse(r.stdout).error.code, 'not_found');
    assert.match(JSON.parse(r.stdout).error.message, /pull policy is "never"/);
    assert.equal((await d.client.list()).length, before);
  });

  it('always: pulls again even when the image is stored; missing: uses the store', async () => {
    const pulled = await d.client.create({ image: ref, pull_policy: 'always', cmd: ['true'] });
    await pulled.remove({ force: true });
    const stored = await d.client.create({ image: ref, pull_policy: 'never', cmd: ['true'] });
    assert.equal(stored.info.state, 'running');
    await stored.remove({ force: true });
  });

  it('rejects an unknown policy at the edge', async () => {
    const r = await cli(d, ['create', '--image', ref, '--pull', 'sometimes']);
    assert.equal(r.code, 64);
    assert.match(r.stderr, /pull_policy/);
  });
});

describe('image import', () => {
  it('imports a docker save archive and runs it', async () => {
    const file = join(work, 'app.tar');
    // docker save archives cannot hold zstd layers; build a gzip-only twin of the app image.
    writeLayout(join(work, 'app-gz'), { layers: [{ tar: await layerTar(baseEntries()), compression: 'gzip' }, { tar: await layerTar(appEntries()), compression: 'none' }], config: APP_CONFIG });
    dockerArchive(join(work, 'app-gz'), file, 'imported/app:saved');
    const r = await cli(d, ['image', 'import', '--json', file]);
    assert.equal(r.code, 0, r.stderr);
    const [img] = JSON.parse(r.stdout);
    assert.equal(img.name, 'docker.io/imported/app:saved');
    assert.deepEqual(img.config.cmd, ['default-arg']);
    const run = await cli(d, ['run', '--runtime', RUNTIMES[0], '--image', 'imported/app:saved', '--', 'from-archive']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^args:from-archive$/m);
  });

  it('imports an OCI layout directory under a given name', async () => {
    const r = await cli(d, ['image', 'import', '--name', 'local/layout:1', join(work, 'app')]);
    assert.equal(r.code, 0, r.stderr);
    const img = await d.client.images.get('local/layout:1');
    assert.equal(img.layers.length, 2);
    assert.equal(img.source, 'import');
  });

  it('rejects something that is not an image archive, leaving nothing behind', async () => {
    const r = await cli(d, ['image', 'import', join(work, 'app', 'oci-layout')]);
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, /not .*image archive/);
  });
});
