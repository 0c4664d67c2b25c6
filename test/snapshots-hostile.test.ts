// A hostile source sandbox: its writable layer holds symlinks to host paths, a FIFO, a socket, many
// files, a tree deeper than PATH_MAX, hard links, overlay whiteouts and an opaque directory. The
// host copies it without following a link or opening a special file, and a sandbox made from the
// snapshot sees exactly what the source saw. A snapshot that would eat the disk reserve is refused
// before the sandbox is even frozen, leaving nothing behind.
import assert from 'node:assert/strict';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { RUNTIMES, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { rejectsWith } from './helpers/assert.js';

let d: TestDaemon;
let full: TestDaemon;

before(async () => {
  d = await startDaemon('snapshots-hostile');
  // Keeping a petabyte free is impossible: every snapshot is refused by the disk check.
  full = await startDaemon('snapshots-full', { args: ['--snapshot-reserve', '1024t'] });
});
after(async () => {
  for (const x of [d, full]) {
    for (const s of (await x?.client.list().catch(() => [])) ?? []) await x.client.remove(s.id, { force: true }).catch(() => {});
    for (const s of (await x?.client.snapshots().catch(() => [])) ?? []) await x.client.removeSnapshot(s.id).catch(() => {});
    await x?.cleanup();
  }
});

const sh = async (sb: Sandbox, script: string) => {
  const r = await sb.exec(['sh', '-c', script], { timeout: 120 });
  return { code: r.exit_code, out: r.stdout.trim(), err: r.stderr.trim() };
};

const SEGMENT = 'd123456789012345678901234567890123456789';
const HOSTILE = [
  'set -e',
  'ln -s /etc/shadow /root/shadow-link',
  'ln -s ../../../../../../../etc/passwd /root/rel-link',
  'ln -s / /root/root-link',
  'mkfifo /root/fifo',
  `python3 -c "import socket;socket.socket(socket.AF_UNIX).bind('/root/sock')"`,
  'mkdir /root/many && cd /root/many && seq 1 3000 | xargs touch && cd /',
  `mkdir -p /root/deep && cd /root/deep && for i in $(seq 1 60); do mkdir ${SEGMENT} && cd ${SEGMENT}; done && echo bottom > bottom && cd /`,
  'echo linked > /root/a && ln /root/a /root/b',
  'rm /etc/debian_version',
  'rm -rf /usr/share/doc && mkdir /usr/share/doc && touch /usr/share/doc/only-this',
].join('\n');

for (const runtime of RUNTIMES) {
  describe(`a hostile writable layer on ${runtime}`, () => {
    test('copied as it is, never followed or opened; a sandbox from it sees what the source saw', async () => {
      const source = await d.client.create({ runtime });
      const made = await sh(source, HOSTILE);
      assert.equal(made.code, 0, made.err);
      const snap = await source.snapshot();
      const layer = join(d.dataDir, 'snapshots', snap.id, 'layer');
      // On the host: links are links with the sandbox's targets, special files are special files.
      assert.equal(readlinkSync(join(layer, 'root', 'shadow-link')), '/etc/shadow');
      assert.equal(lstatSync(join(layer, 'root', 'root-link')).isSymbolicLink(), true);
      // gVisor keeps FIFOs and bound sockets in the sandbox's memory, not on the host: only the
      // kernel runtimes put them in the writable layer.
      if (runtime !== 'runsc') {
        assert.equal(lstatSync(join(layer, 'root', 'fifo')).isFIFO(), true);
        assert.equal(lstatSync(join(layer, 'root', 'sock')).isSocket(), true);
      }
      assert.equal(lstatSync(join(layer, 'etc', 'debian_version')).isCharacterDevice(), true, 'the whiteout');
      assert.equal(readdirSync(join(layer, 'root', 'many')).length, 3000);
      assert.equal((await source.refresh()).state, 'running');

      const child = await d.client.create({ snapshot: snap.id });
      const seen = await sh(
        child,
        [
          'readlink /root/shadow-link /root/rel-link /root/root-link',
          'test -p /root/fifo || test ! -e /root/fifo && echo fifo',
          'test -S /root/sock || test ! -e /root/sock && echo sock',
          'ls /root/many | wc -l',
          `(cd /root/deep && for i in $(seq 1 60); do cd ${SEGMENT}; done && cat bottom)`,
          'stat -c %h /root/a',
          'test -e /etc/debian_version || echo whiteout',
          'ls /usr/share/doc',
        ].join('; '),
      );
      assert.equal(seen.out, ['/etc/shadow', '../../../../../../../etc/passwd', '/', 'fifo', 'sock', '3000', 'bottom', '2', 'whiteout', 'only-this'].join('\n'), seen.err);
      // The links lead inside the new sandbox, to its own files.
      assert.match((await sh(child, 'cat /root/rel-link')).out, /^root:/);

      // Deeper than the host's PATH_MAX (GNU cp cannot copy it): refused, naming why; it runs on.
      const deeper = await sh(source, `python3 -c "import os;os.chdir('/root');[(os.mkdir('${SEGMENT}'),os.chdir('${SEGMENT}')) for i in range(120)];open('bottom','w').write('deeper')"`);
      assert.equal(deeper.code, 0, deeper.err);
      const before = readdirSync(join(d.dataDir, 'snapshots')).length;
      const refused = await rejectsWith(source.snapshot(), 'invalid_state', /deeper than the host can copy.*remove or flatten it/);
      assert.doesNotMatch(refused.message, new RegExp(d.dataDir), 'no host path in the message');
      assert.equal(readdirSync(join(d.dataDir, 'snapshots')).length, before, 'nothing left of the refused snapshot');
      assert.equal((await source.refresh()).state, 'running');
      assert.equal((await sh(source, 'echo alive')).out, 'alive');
      await d.client.remove(child.id, { force: true });
      await d.client.removeSnapshot(snap.id);
      await d.client.remove(source.id, { force: true });
    });
  });
}

describe('the disk reserve', () => {
  test('a snapshot that would leave less than --snapshot-reserve free is refused (507) before the freeze; nothing stays', async () => {
    const source = await full.client.create({ runtime: RUNTIMES[RUNTIMES.length - 1] });
    assert.equal((await sh(source, 'echo data > /root/data')).code, 0);
    await rejectsWith(source.snapshot(), 'no_space', /--snapshot-reserve/);
    await rejectsWith(source.fork({ count: 2 }), 'no_space');
    assert.equal((await source.refresh()).state, 'running');
    assert.equal((await sh(source, 'cat /root/data')).out, 'data');
    assert.deepEqual(await full.client.snapshots(), []);
    assert.deepEqual(readdirSync(join(full.dataDir, 'snapshots')), [], 'no partial snapshot directory');
    const events = await source.events_();
    assert.equal(events.some((e) => e.type === 'snapshot'), false);
    assert.equal((await full.client.list()).length, 1, 'no fork was created');
  });
});
