import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import tar from 'tar-stream';
import { cli, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { APP_CONFIG, appEntries, baseEntries, layerTar, push, writeLayout } from './helpers/oci-image.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';

// Templates built from a Dockerfile: every instruction, the step cache, failures that leave nothing,
// COPY ownership and modes, a hostile context, removal while in use, and a daemon restart.

let d: TestDaemon;
let reg: TestRegistry;
let work: string;
let imageRef: string;

before(async () => {
  work = mkdtempSync('/var/lib/cordon-test/tmpl-work-');
  reg = await startRegistry('tmpl');
  d = await startDaemon('template-build');
  writeLayout(join(work, 'img'), { layers: [{ tar: await layerTar(baseEntries()), compression: 'gzip' }, { tar: await layerTar(appEntries()), compression: 'gzip' }], config: APP_CONFIG }, { refName: 'latest' });
  imageRef = `${reg.host}/test/app:1`;
  push(join(work, 'img'), imageRef);
});

after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d?.cleanup();
  await reg?.cleanup();
  rmSync(work, { recursive: true, force: true });
});

type Ev = { type: string; step?: number; sandbox_id?: string; layer?: string; data?: string; template?: { name: string; layers: string[] } };

function ndjson(text: string): Ev[] {
  return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Ev);
}

/** Steps that ran in a sandbox, and steps taken from the cache. */
function stepsOf(evs: Ev[]): { ran: number[]; cached: number[] } {
  return { ran: evs.filter((e) => e.type === 'sandbox').map((e) => e.step!), cached: evs.filter((e) => e.type === 'cached').map((e) => e.step!) };
}

function layerDirs(): string[] {
  return readdirSync(join(d.dataDir, 'template-layers')).filter((n) => n !== 'tmp');
}

function context(name: string, files: Record<string, string>): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), content);
  }
  return dir;
}

const FULL = `# every instruction the builder knows
ARG BASE=base
FROM \${BASE}
ARG GREETING=hello
ENV APP_HOME=/opt/app \\
    GREETING_ENV=\${GREETING}
LABEL team=a
WORKDIR $APP_HOME
COPY --chown=user:user --chmod=0640 data.txt ./data.txt
COPY --chown=1234:2345 numeric.txt /opt/numeric.txt
COPY dir/ sub/
ADD bundle.tar /opt/unpacked/
RUN echo "built by $(id -un) with $GREETING in $(pwd)" > built.txt
USER user
RUN id -un > /home/user/whoami.txt
EXPOSE 8080/tcp 9000
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo default"]
`;

describe('template build from a Dockerfile', () => {
  let ctx: string;

  it('builds a Dockerfile with every instruction, and a sandbox from it has the files, env, workdir and user', async () => {
    ctx = context('full', { Dockerfile: FULL, 'data.txt': 'data\n', 'numeric.txt': 'n\n', 'dir/a.txt': 'a\n', 'dir/deeper/b.txt': 'b\n', 'ignored.log': 'no\n', '.dockerignore': '*.log\n', 'inner/inner.txt': 'from the tar\n' });
    execFileSync('tar', ['-cf', join(ctx, 'bundle.tar'), '-C', join(ctx, 'inner'), 'inner.txt']);
    const r = await cli(d, ['template', 'build', 'full', '--context', ctx, '--build-arg', 'GREETING=hey', '--json']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const evs = ndjson(r.stdout);
    const result = evs.find((e) => e.type === 'result')!;
    assert.equal(result.template!.name, 'full');
    assert.equal(result.template!.layers.length, 6, 'COPY, COPY, COPY, ADD, RUN, RUN make a layer each');
    assert.equal(stepsOf(evs).ran.length, 6);

    const info = await d.client.templates.get('full');
    assert.equal(info.config.workdir, '/opt/app');
    assert.equal(info.config.user, 'user');
    assert.deepEqual(info.config.entrypoint, ['/bin/sh', '-c']);
    assert.deepEqual(info.config.cmd, ['echo default']);
    assert.ok(info.config.env.includes('GREETING_ENV=hey'), info.config.env.join(' '));
    assert.deepEqual(info.exposed_ports, ['8080/tcp', '9000/tcp']);
    assert.deepEqual(info.labels, { team: 'a' });
    assert.equal(info.start_cmd, null);

    const sbx = await d.client.create({ template: 'full', entrypoint: [] });
    try {
      const x = await sbx.exec(['sh', '-c', 'pwd; id -un; echo "$GREETING_ENV"; stat -c "%U:%G %a" data.txt; stat -c "%u:%g" /opt/numeric.txt; cat built.txt; ls sub sub/deeper; cat /opt/unpacked/inner.txt; cat /home/user/whoami.txt; ls /opt/app']);
      assert.equal(x.exit_code, 0, x.stderr);
      const lines = x.stdout.split('\n');
      assert.equal(lines[0], '/opt/app');
      assert.equal(lines[1], 'user');
      assert.equal(lines[2], 'hey');
      assert.equal(lines[3], 'user:user 640');
      assert.equal(lines[4], '1234:2345');
      assert.equal(lines[5], 'built by root with hey in /opt/app');
      assert.match(x.stdout, /^a\.txt$/m);
      assert.match(x.stdout, /^b\.txt$/m);
      assert.match(x.stdout, /^from the tar$/m);
      assert.match(x.stdout, /^user$/m);
      assert.doesNotMatch(x.stdout, /ignored\.log|Dockerfile/, '.dockerignore and unCOPYed files stay out');
    } finally {
      await sbx.remove({ force: true });
    }
    const run = await cli(d, ['run', '--template', 'full']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.trim(), 'default', 'run --template applies ENTRYPOINT + CMD');
  });

  it('an unchanged rebuild makes no sandbox; a changed input rebuilds from that step on', async () => {
    const again = await cli(d, ['template', 'build', 'full', '--context', ctx, '--build-arg', 'GREETING=hey', '--json']);
    assert.equal(again.code, 0, again.stderr);
    const evs = ndjson(again.stdout);
    assert.deepEqual(stepsOf(evs).ran, [], 'every step came from the cache');
    assert.equal(stepsOf(evs).cached.length, 6);

    writeFileSync(join(ctx, 'dir/a.txt'), 'changed\n');
    const changed = ndjson((await cli(d, ['template', 'build', 'full', '--context', ctx, '--build-arg', 'GREETING=hey', '--json'])).stdout);
    // Steps: 1 ARG, 2 FROM, 3 ARG, 4 ENV, 5 LABEL, 6 WORKDIR, 7 COPY, 8 COPY, 9 COPY dir/, 10 ADD, 11 RUN, 12 USER, 13 RUN ...
    assert.deepEqual(stepsOf(changed).cached, [7, 8]);
    assert.deepEqual(stepsOf(changed).ran, [9, 10, 11, 13]);
    const sbx = await d.client.create({ template: 'full', entrypoint: [] });
    try {
      assert.equal((await sbx.exec(['cat', 'sub/a.txt'])).stdout, 'changed\n');
    } finally {
      await sbx.remove({ force: true });
    }

    const argChanged = ndjson((await cli(d, ['template', 'build', 'full', '--context', ctx, '--build-arg', 'GREETING=other', '--json'])).stdout);
    assert.deepEqual(stepsOf(argChanged).ran, [7, 8, 9, 10, 11, 13], 'a build argument in force changes every later step');
    const noCache = ndjson((await cli(d, ['template', 'build', 'full', '--context', ctx, '--build-arg', 'GREETING=other', '--no-cache', '--json'])).stdout);
    assert.equal(stepsOf(noCache).cached.length, 0);
    assert.equal(stepsOf(noCache).ran.length, 6);
  });

  it('a failing RUN fails the build with its step and output, and leaves no template, layer or sandbox', async () => {
    const before = layerDirs();
    const c = context('fails', { Dockerfile: 'FROM base\nRUN echo first > /first.txt\nRUN echo boom-output-here; exit 3\n' });
    const r = await cli(d, ['template', 'build', 'broken', '--context', c]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /step 3 \(RUN echo boom-output-here; exit 3\) failed with exit code 3/);
    assert.match(r.stderr, /boom-output-here/);
    assert.equal((await cli(d, ['template', 'inspect', 'broken'])).code, 66);
    assert.deepEqual(layerDirs().sort(), before.sort(), 'no layer dir of the failed build stays');
    assert.deepEqual((await d.client.list()).filter((s) => s.labels['cordon.build']), []);
    const bad = await cli(d, ['template', 'build', 'broken2', '--context', context('syntax', { Dockerfile: 'RUN true\n' })]);
    assert.equal(bad.code, 64);
    assert.match(bad.stderr, /line 1: RUN comes before FROM/);
    const net = await cli(d, ['template', 'build', 'broken3', '--context', c, '--network', 'open']);
    assert.equal(net.code, 64);
    assert.match(net.stderr, /needs an egress interface/, 'a build network is checked like a sandbox network, before anything runs');
  });

  it('refuses context escapes: COPY ../x, paths through symlinks, and hostile tar names; a symlink is copied as a link', async () => {
    const c = context('escape', { 'ok.txt': 'ok\n' });
    symlinkSync('/etc/shadow', join(c, 'shadow-link'));
    symlinkSync('/etc', join(c, 'etc-link'));
    writeFileSync(join(c, 'Dockerfile'), 'FROM base\nCOPY ../outside.txt /x\n');
    writeFileSync(join(work, 'outside.txt'), 'secret\n');
    const up = await cli(d, ['template', 'build', 'esc', '--context', c]);
    assert.equal(up.code, 64);
    assert.match(up.stderr, /outside the build context/);

    writeFileSync(join(c, 'Dockerfile'), 'FROM base\nCOPY etc-link/shadow /x\n');
    const through = await cli(d, ['template', 'build', 'esc', '--context', c]);
    assert.equal(through.code, 64);
    assert.match(through.stderr, /goes through the symlink etc-link/);

    writeFileSync(join(c, 'Dockerfile'), 'FROM base\nCOPY shadow-link /copied\nCOPY ok.txt /ok.txt\n');
    const link = await cli(d, ['template', 'build', 'esc', '--context', c]);
    assert.equal(link.code, 0, link.stderr);
    const sbx = await d.client.create({ template: 'esc' });
    try {
      const x = await sbx.exec(['sh', '-c', 'readlink /copied; cat /ok.txt']);
      assert.equal(x.stdout, '/etc/shadow\nok\n', 'the link itself, pointing into the sandbox, never the host file');
    } finally {
      await sbx.remove({ force: true });
    }

    // A hand-made context tar with a ".." entry is refused before anything is built.
    const pack = tar.pack();
    pack.entry({ name: 'Dockerfile' }, 'FROM base\nCOPY . /\n');
    pack.entry({ name: '../../evil.txt' }, 'evil');
    pack.finalize();
    await assert.rejects(d.client.templates.build('evil', pack), /contains "\.\."/);
    await assert.rejects(d.client.templates.get('evil'), /does not exist/);
  });

  it('refuses to remove a template that a sandbox, a snapshot or another template uses', async () => {
    const c = context('child', { Dockerfile: 'FROM esc\nRUN echo child > /child.txt\n' });
    const sbx = await d.client.create({ template: 'esc' });
    const busy = await cli(d, ['template', 'rm', 'esc']);
    assert.equal(busy.code, 65);
    assert.match(busy.stderr, new RegExp(`used by sandbox ${sbx.id}`));
    // A snapshot outlives its source and stands on the template's layers.
    const snap = await sbx.snapshot({ name: 'on-esc' });
    await sbx.remove({ force: true });
    const under = await cli(d, ['template', 'rm', 'esc']);
    assert.equal(under.code, 65);
    assert.match(under.stderr, /template esc is under snapshot on-esc .*remove it first with `cordon snapshot rm`/);
    const fromSnap = await d.client.create({ snapshot: 'on-esc' });
    assert.equal((await fromSnap.exec(['true'])).exit_code, 0, 'its layers are all there');
    await fromSnap.remove({ force: true });
    await d.client.removeSnapshot(snap.id);
    assert.equal((await cli(d, ['template', 'build', 'child', '--context', c])).code, 0);
    const parent = await cli(d, ['template', 'rm', 'esc']);
    assert.equal(parent.code, 65);
    assert.match(parent.stderr, /FROM of template child/);
    const before = layerDirs().length;
    assert.equal((await cli(d, ['template', 'rm', 'child'])).code, 0);
    assert.equal((await cli(d, ['template', 'rm', 'esc'])).code, 0);
    assert.ok(layerDirs().length < before, 'their layers were freed');
  });

  it('builds FROM a registry image: its config is inherited, deletions are kept as whiteouts, and the image stays pinned', async () => {
    const c = context('fromimage', { Dockerfile: `FROM ${imageRef}\nUSER root\nRUN rm /data/b.txt && echo made > /etc/made.txt\nCOPY f.txt /app/f.txt\nUSER app\n`, 'f.txt': 'f\n' });
    const r = await cli(d, ['template', 'build', 'fromimage', '--context', c]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Step 3\/5 : RUN rm/);
    const run = await cli(d, ['run', '--template', 'fromimage']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^args:default-arg$/m, "the image's ENTRYPOINT and CMD");
    assert.match(run.stdout, /^uid:1000$/m);
    const sbx = await d.client.create({ template: 'fromimage', entrypoint: [] });
    try {
      const x = await sbx.exec(['sh', '-c', 'ls /data; cat /etc/made.txt /app/f.txt']);
      assert.equal(x.stdout, 'made\nf\n', 'b.txt deleted by the RUN step stays deleted');
    } finally {
      await sbx.remove({ force: true });
    }
    const rm = await cli(d, ['image', 'rm', imageRef]);
    assert.equal(rm.code, 65, 'the image is in use by a template');
    assert.equal((await cli(d, ['image', 'rm', '--force', imageRef])).code, 0);
    await d.client.images.prune();
    const again = await d.client.create({ template: 'fromimage', entrypoint: [] });
    try {
      assert.equal((await again.exec(['cat', '/app/f.txt'])).stdout, 'f\n', 'prune kept the layers the template sits on');
    } finally {
      await again.remove({ force: true });
    }
    assert.equal((await cli(d, ['template', 'rm', 'fromimage'])).code, 0);
  });

  it('a hostile RUN step cannot make the host follow what it leaves in its layer', async () => {
    const c = context('hostile', {
      Dockerfile: [
        'FROM base',
        // Plant links and files where the engine keeps its helpers, and links to host-looking paths.
        'RUN ln -s /etc /.cordon/evil-etc; ln -s / /.cordon/run/evil-root; touch /.cordon/planted; ln -sfn /etc /evil; rm -f /etc/debian_version; true',
        'RUN ls /.cordon > /cordon-listing.txt; test ! -e /etc/debian_version',
      ].join('\n'),
    });
    const r = await cli(d, ['template', 'build', 'hostile', '--context', c]);
    assert.equal(r.code, 0, r.stderr);
    const layers = (await d.client.templates.get('hostile')).layers;
    for (const l of layers) assert.deepEqual(readdirSync(join(d.dataDir, 'template-layers', l)).filter((n) => n === '.cordon'), [], 'the helper directory never becomes part of a layer');
    assert.ok(readdirSync('/etc').includes('passwd'), "the host's /etc is untouched");
    const sbx = await d.client.create({ template: 'hostile' });
    try {
      const x = await sbx.exec(['sh', '-c', 'cat /cordon-listing.txt; ls /.cordon; readlink /evil; test -e /etc/debian_version || echo gone']);
      assert.doesNotMatch(x.stdout, /planted|evil-etc/);
      assert.match(x.stdout, /^\/etc$/m);
      assert.match(x.stdout, /^gone$/m, 'the deletion is a whiteout in the layer');
    } finally {
      await sbx.remove({ force: true });
    }
    assert.equal((await cli(d, ['template', 'rm', 'hostile'])).code, 0);
  });

  it('what a RUN step writes to /tmp is kept for the next step and in the template, under runsc and crun', async () => {
    const c = context('tmpkeep', { Dockerfile: 'FROM base\nRUN echo x > /tmp/a\nRUN cat /tmp/a && cp /tmp/a /tmp/b\n' });
    const crun = await startDaemon('template-build-crun', { args: ['--runtime', 'crun'] });
    try {
      for (const daemon of [d, crun]) {
        const r = await cli(daemon, ['template', 'build', 'tmpkeep', '--context', c]);
        assert.equal(r.code, 0, r.stderr);
        const sbx = await daemon.client.create({ template: 'tmpkeep' });
        try {
          const x = await sbx.exec(['sh', '-c', 'cat /tmp/a /tmp/b; stat -c %a /tmp; grep -c " /tmp tmpfs " /proc/mounts']);
          assert.equal(x.stdout, `x\nx\n1777\n0\n`, `${sbx.info.runtime}: ${x.stderr}`);
          // Mounted from the rootfs under runsc, /tmp cannot be swapped for a link while the sandbox runs.
          if (daemon === d) assert.notEqual((await sbx.exec(['sh', '-c', 'mv /tmp /tmp-moved || rmdir /tmp'])).exit_code, 0);
        } finally {
          await sbx.remove({ force: true });
        }
        assert.equal((await cli(daemon, ['template', 'rm', 'tmpkeep'])).code, 0);
      }
    } finally {
      await crun.stop();
      await crun.cleanup();
    }
  });

  it('an image whose /tmp is a link to a host path: steps and sandboxes write inside the sandbox, never on the host', async () => {
    const probe = `cordon-tmp-probe-${process.pid}`;
    const entries = baseEntries().map((e) => (e.name === 'tmp' ? { name: 'tmp', type: 'symlink' as const, linkname: '/etc' } : e));
    writeLayout(join(work, 'tmplink-img'), { layers: [{ tar: await layerTar(entries), compression: 'gzip' }], config: { Env: ['PATH=/bin'] } }, { refName: 'latest' });
    push(join(work, 'tmplink-img'), `${reg.host}/test/tmplink:1`);
    const c = context('tmplink', { Dockerfile: `FROM ${reg.host}/test/tmplink:1\nRUN echo probe > /tmp/${probe}\n` });
    const r = await cli(d, ['template', 'build', 'tmplink', '--context', c]);
    assert.equal(r.code, 0, r.stderr);
    const sbx = await d.client.create({ template: 'tmplink' });
    try {
      const x = await sbx.exec(['sh', '-c', `echo again > /tmp/${probe}-2; readlink /tmp; cat /etc/${probe} /etc/${probe}-2`]);
      assert.equal(x.stdout, '/etc\nprobe\nagain\n', x.stderr);
    } finally {
      await sbx.remove({ force: true });
    }
    assert.equal(existsSync(`/etc/${probe}`) || existsSync(`/etc/${probe}-2`), false, "nothing reached the host's /etc");
    assert.equal((await cli(d, ['template', 'rm', 'tmplink'])).code, 0);
  });

  it('a template with start and ready commands has its service answering when create returns', async () => {
    const c = context('service', { Dockerfile: 'FROM base\nRUN mkdir -p /srv && echo served > /srv/index.html\nWORKDIR /srv\n' });
    const r = await cli(d, ['template', 'build', 'service', '--context', c, '--start-cmd', 'echo started > /tmp/started; python3 -m http.server 8000 --bind 127.0.0.1', '--ready-cmd', 'curl -sf http://127.0.0.1:8000/ > /dev/null']);
    assert.equal(r.code, 0, r.stderr);
    const sbx = await d.client.create({ template: 'service' });
    try {
      const x = await sbx.exec(['curl', '-s', 'http://127.0.0.1:8000/index.html']);
      assert.equal(x.stdout, 'served\n', 'the first request right after create is answered');
      assert.ok((await sbx.processes()).some((p) => p.tag === 'start' && p.running));
      // Restored from the template's memory snapshot, whose /tmp was on its rootfs.
      assert.equal((await sbx.exec(['cat', '/tmp/started'])).stdout, 'started\n');
    } finally {
      await sbx.remove({ force: true });
    }
    assert.equal((await cli(d, ['template', 'rm', 'service'])).code, 0);
  });

  it('a ready command that never passes fails the build with the output of both, and keeps nothing', async () => {
    const before = layerDirs();
    const c = context('neverready', { Dockerfile: 'FROM base\nRUN echo x > /x\n' });
    const r = await cli(d, ['template', 'build', 'neverready', '--context', c, '--start-cmd', 'echo starting-up; sleep 1000', '--ready-cmd', 'echo not-yet; false', '--ready-timeout', '3']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /ready command did not pass within 3s/);
    assert.match(r.stderr, /starting-up/);
    assert.match(r.stderr, /not-yet/);
    assert.equal((await cli(d, ['template', 'inspect', 'neverready'])).code, 66);
    assert.deepEqual(layerDirs().sort(), before.sort());
    assert.deepEqual((await d.client.list()).filter((s) => s.labels['cordon.build']), []);
  });

  it('keeps templates and their layers across a daemon restart', async () => {
    await d.stop();
    await d.restart();
    const ls = await cli(d, ['template', 'ls', '--json']);
    assert.ok((JSON.parse(ls.stdout) as { name: string }[]).some((t) => t.name === 'full'));
    const sbx = await d.client.create({ template: 'full', entrypoint: [] });
    try {
      assert.equal((await sbx.exec(['cat', '/home/user/whoami.txt'])).stdout, 'user\n');
    } finally {
      await sbx.remove({ force: true });
    }
  });
});
