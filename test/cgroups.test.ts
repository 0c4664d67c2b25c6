// Unit tests of the cgroup module: mode detection from mountinfo texts, and the v1 and v2 drivers
// against trees built in a temp directory with the files the kernel shows. No sandbox, no daemon.
// (The real v1 host is exercised by limits.test.ts and lifecycle.test.ts.)
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CgroupV1, CgroupV2, cgroupsPathFor, driverFor, parseMountinfo } from '../src/runtime/cgroup/index.js';
import { detectLayout } from '../src/runtime/cgroup/detect.js';

const MiB = 1024 * 1024;
const ID = 'abcdefghij0123456789';
const tmp = mkdtempSync(join(tmpdir(), 'cordon-cgroups-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Write files (relative path → content) under a directory, creating folders. */
function tree(root: string, files: Record<string, string>): string {
  for (const [rel, content] of Object.entries(files)) {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    writeFileSync(join(root, rel), content);
  }
  return root;
}
const read = (path: string) => readFileSync(path, 'utf8');

// This host (Debian 12 on a 6.18 kernel): v1 controllers plus a cgroup2 mount holding only hugetlb.
const HYBRID = `22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
// A v1-only host (CentOS 7 style): cpu and cpuacct share a hierarchy, systemd has a named one.
const V1 = `25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,pids
32 25 0:28 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,blkio
`;
// A current distribution (Debian 12, Ubuntu 22.04+, Fedora): cgroup2 only, at /sys/fs/cgroup.
const UNIFIED = `24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

describe('detecting the cgroup mode from mountinfo', () => {
  test('v1 only: controllers found where they are mounted, co-mounted ones included', () => {
    const l = parseMountinfo(V1);
    assert.equal(l.mode, 'v1');
    assert.equal(l.unified, undefined);
    const cpu = l.v1.find((h) => h.controllers.includes('cpuacct'));
    assert.deepEqual(cpu, { mountPoint: '/sys/fs/cgroup/cpu,cpuacct', controllers: ['cpu', 'cpuacct'] });
    assert.deepEqual(l.v1.find((h) => h.mountPoint.endsWith('/systemd'))?.controllers, [], 'name=systemd holds no controller');
    assert.equal(driverFor(l).mode, 'v1');
  });

  test('hybrid like this host: v1 controllers plus a cgroup2 side mount', () => {
    const l = parseMountinfo(HYBRID);
    assert.equal(l.mode, 'hybrid');
    assert.equal(l.unified, '/sys/fs/cgroup/unified');
    assert.equal(l.v1.find((h) => h.controllers.includes('memory'))?.mountPoint, '/sys/fs/cgroup/memory');
    const d = driverFor(l);
    assert.ok(d instanceof CgroupV1 && d.mode === 'hybrid', 'a hybrid host uses its v1 hierarchies');
  });

  test('unified: cgroup2 at /sys/fs/cgroup, also when mounted over an earlier tmpfs', () => {
    const l = parseMountinfo(UNIFIED);
    assert.deepEqual(l, { mode: 'unified', v1: [], unified: '/sys/fs/cgroup' });
    assert.ok(driverFor(l) instanceof CgroupV2);
    const over = `${V1}40 25 0:40 / /sys/fs/cgroup rw,relatime shared:20 - cgroup2 cgroup2 rw\n`;
    assert.equal(parseMountinfo(over).mode, 'unified', 'the last mount on a point hides the earlier one');
  });

  test('none, an injected root, escaped mount points and junk lines', () => {
    assert.equal(parseMountinfo('').mode, 'none');
    assert.equal(parseMountinfo('garbage\n1 2 3\n').mode, 'none');
    const hybridNoControllers = `${UNIFIED.split('\n')[0]}\n31 23 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n`;
    assert.equal(parseMountinfo(hybridNoControllers).mode, 'none', 'a named hierarchy alone holds no controller');
    const spaced = '50 1 0:50 / /tmp/my\\040cgroups rw - cgroup2 cgroup2 rw\n';
    assert.deepEqual(parseMountinfo(spaced, '/tmp/my cgroups'), { mode: 'unified', v1: [], unified: '/tmp/my cgroups' });
    assert.equal(parseMountinfo(UNIFIED, '/elsewhere').mode, 'none', 'the root is where cgroups are looked for');
  });

  test('on this machine, detection agrees with the statfs magic the runtimes use', async () => {
    const layout = await detectLayout();
    const magic = await statfs('/sys/fs/cgroup').then((s) => s.type, () => 0);
    assert.equal(layout.mode === 'unified', magic === 0x63677270, `mode ${layout.mode}, magic 0x${magic.toString(16)}`);
  });

  test('the OCI cgroupsPath is absolute under /cordon in every mode', () => {
    assert.equal(cgroupsPathFor(ID), `/cordon/${ID}`);
  });
});

describe('cgroup v2 driver on a constructed tree', () => {
  const root = join(tmp, 'v2');
  const sb = (name: string) => join(root, 'cordon', ID, name);
  tree(root, {
    'cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n',
    'cgroup.subtree_control': 'cpu memory\n',
    [`cordon/${ID}/cpu.stat`]: 'usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 2\nthrottled_usec 800\n',
    [`cordon/${ID}/memory.current`]: `${100 * MiB}\n`,
    [`cordon/${ID}/memory.max`]: `${256 * MiB}\n`,
    [`cordon/${ID}/memory.swap.max`]: '0\n',
    [`cordon/${ID}/memory.stat`]: `anon ${60 * MiB}\nfile ${40 * MiB}\ninactive_anon ${50 * MiB}\nactive_anon ${10 * MiB}\ninactive_file ${30 * MiB}\nactive_file ${10 * MiB}\n`,
    [`cordon/${ID}/memory.events`]: 'low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n',
    [`cordon/${ID}/memory.events.local`]: 'low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\noom_group_kill 0\n',
    [`cordon/${ID}/memory.reclaim`]: '',
    [`cordon/${ID}/pids.current`]: '7\n',
    [`cordon/${ID}/pids.max`]: '4608\n',
    [`cordon/${ID}/io.stat`]: '254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n7:3 rbytes=1000 wbytes=24 rios=3 wios=1 dbytes=0 dios=0\n',
  });
  const cg = new CgroupV2(root);

  test('stats: usage_usec in ns, memory.current less inactive_file, io.stat summed, oom_kill from memory.events', async () => {
    assert.deepEqual(await cg.stats(ID), {
      cpuUsageNs: 2_500_000_000,
      memoryUsageBytes: 70 * MiB,
      memoryLimitBytes: 256 * MiB,
      pids: 7,
      diskReadBytes: 5096,
      diskWriteBytes: 8216,
      oomKills: 2,
    });
    assert.equal(await cg.oomKills(ID), 2, 'hierarchical memory.events, not memory.events.local');
  });

  test('"max" reads as no limit; a missing sandbox reads as zeros; a bad id is refused', async () => {
    writeFileSync(sb('memory.max'), 'max\n');
    assert.equal((await cg.stats(ID)).memoryLimitBytes, 0);
    writeFileSync(sb('memory.max'), `${256 * MiB}\n`);
    const none = await cg.stats('zzzzzzzzzzzzzzzzzzzz');
    assert.deepEqual(Object.values(none), [0, 0, 0, 0, 0, 0, 0]);
    await assert.rejects(cg.stats('../../etc'), /not a sandbox id/);
  });

  test('setMemoryLimit writes memory.max and memory.swap.max 0', async () => {
    writeFileSync(sb('memory.swap.max'), 'max\n');
    await cg.setMemoryLimit(ID, 384 * MiB);
    assert.equal(read(sb('memory.max')), String(384 * MiB));
    assert.equal(read(sb('memory.swap.max')), '0', 'no swap beyond the limit, as memsw = memory on v1');
    await cg.setMemoryLimit(ID, 80 * MiB);
    assert.equal(read(sb('memory.max')), String(80 * MiB), 'lowering below usage but above what cannot be reclaimed works');
    assert.equal(read(sb('memory.reclaim')), String(20 * MiB), 'the kernel was asked to reclaim the difference first');
  });

  test('setMemoryLimit refuses below what cannot be reclaimed (v1 answers EBUSY; v2 would OOM-kill)', async () => {
    await cg.setMemoryLimit(ID, 256 * MiB);
    await assert.rejects(cg.setMemoryLimit(ID, 64 * MiB), /holds 73400320 bytes/);
    assert.equal(read(sb('memory.max')), String(256 * MiB), 'the limit is unchanged');
  });

  test('setMemoryLimit without swap accounting writes memory.max only; without the memory controller it fails', async () => {
    rmSync(sb('memory.swap.max'));
    await cg.setMemoryLimit(ID, 300 * MiB);
    assert.equal(read(sb('memory.max')), String(300 * MiB));
    assert.equal(existsSync(sb('memory.swap.max')), false, 'no file is invented');
    const bare = tree(join(tmp, 'v2-bare'), { [`cordon/${ID}/cgroup.procs`]: '' });
    await assert.rejects(new CgroupV2(bare).setMemoryLimit(ID, 64 * MiB), /memory controller is not enabled/);
  });

  test('prepare creates /cordon and enables cpu io memory pids where missing', async () => {
    const r = tree(join(tmp, 'v2-prep'), { 'cgroup.controllers': 'cpuset cpu io memory pids\n', 'cgroup.subtree_control': 'cpu memory\n' });
    assert.deepEqual(await new CgroupV2(r).prepare(), []);
    assert.equal(read(join(r, 'cgroup.subtree_control')), '+io +pids', 'only what the root lacked');
    assert.equal(read(join(r, 'cordon', 'cgroup.subtree_control')), '+cpu +io +memory +pids');
    const noIo = tree(join(tmp, 'v2-noio'), { 'cgroup.controllers': 'cpu memory pids\n', 'cgroup.subtree_control': '' });
    const warnings = await new CgroupV2(noIo).prepare();
    assert.match(warnings.join('\n'), /controllers io are not available/);
    assert.equal(read(join(noIo, 'cgroup.subtree_control')), '+cpu +memory +pids');
  });

  test('listIds finds sandbox cgroups only; remove takes child cgroups first and leaves busy ones', async () => {
    const r = tree(join(tmp, 'v2-list'), { 'cordon/cgroup.procs': '', [`cordon/${ID}/cgroup.procs`]: '0\n' });
    const gone = 'leftover000000000000';
    mkdirSync(join(r, 'cordon', gone, 'child', 'grandchild'), { recursive: true });
    mkdirSync(join(r, 'cordon', 'Not_An_Id'));
    const d = new CgroupV2(r);
    assert.deepEqual((await d.listIds()).sort(), [ID, gone].sort());
    await d.remove(gone);
    assert.equal(existsSync(join(r, 'cordon', gone)), false, 'a leftover with child cgroups is removed');
    await d.remove(ID);
    assert.ok(existsSync(join(r, 'cordon', ID)), 'rmdir only: a cgroup that is not empty stays');
    await d.remove('..');
    assert.ok(existsSync(join(r, 'cordon', 'Not_An_Id')), 'not an id: nothing is touched');
    assert.deepEqual(await new CgroupV2(join(tmp, 'absent')).listIds(), []);
  });
});

describe('cgroup v1 driver on a constructed tree', () => {
  const root = join(tmp, 'v1');
  const hierarchies = [
    { mountPoint: join(root, 'cpu,cpuacct'), controllers: ['cpu', 'cpuacct'] },
    { mountPoint: join(root, 'memory'), controllers: ['memory'] },
    { mountPoint: join(root, 'pids'), controllers: ['pids'] },
    { mountPoint: join(root, 'blkio'), controllers: ['blkio'] },
    { mountPoint: join(root, 'systemd'), controllers: [] },
  ];
  const mem = (name: string) => join(root, 'memory', 'cordon', ID, name);
  tree(root, {
    [`cpu,cpuacct/cordon/${ID}/cpuacct.usage`]: '123456789\n',
    [`memory/cordon/${ID}/memory.usage_in_bytes`]: `${100 * MiB}\n`,
    [`memory/cordon/${ID}/memory.limit_in_bytes`]: `${256 * MiB}\n`,
    [`memory/cordon/${ID}/memory.memsw.limit_in_bytes`]: `${256 * MiB}\n`,
    [`memory/cordon/${ID}/memory.stat`]: `cache ${40 * MiB}\ninactive_file ${5 * MiB}\ntotal_cache ${40 * MiB}\ntotal_inactive_file ${30 * MiB}\n`,
    [`memory/cordon/${ID}/memory.oom_control`]: 'oom_kill_disable 0\nunder_oom 0\noom_kill 3\n',
    [`pids/cordon/${ID}/pids.current`]: '5\n',
    [`blkio/cordon/${ID}/blkio.throttle.io_service_bytes_recursive`]: '254:0 Read 4096\n254:0 Write 512\n254:0 Sync 0\n254:0 Total 4608\n7:1 Read 4\nTotal 4612\n',
  });
  const cg = new CgroupV1(hierarchies);

  test('stats from each controller where it is mounted (cpuacct co-mounted with cpu)', async () => {
    assert.deepEqual(await cg.stats(ID), {
      cpuUsageNs: 123456789,
      memoryUsageBytes: 70 * MiB,
      memoryLimitBytes: 256 * MiB,
      pids: 5,
      diskReadBytes: 4100,
      diskWriteBytes: 512,
      oomKills: 3,
    });
    writeFileSync(mem('memory.limit_in_bytes'), '9223372036854771712\n');
    assert.equal((await cg.stats(ID)).memoryLimitBytes, 0, "v1's unlimited reads as no limit");
    writeFileSync(mem('memory.limit_in_bytes'), `${256 * MiB}\n`);
  });

  test('setMemoryLimit moves memory and memsw together, both ways', async () => {
    await cg.setMemoryLimit(ID, 384 * MiB);
    assert.equal(read(mem('memory.limit_in_bytes')), String(384 * MiB));
    assert.equal(read(mem('memory.memsw.limit_in_bytes')), String(384 * MiB));
    await cg.setMemoryLimit(ID, 96 * MiB);
    assert.equal(read(mem('memory.limit_in_bytes')), String(96 * MiB));
    assert.equal(read(mem('memory.memsw.limit_in_bytes')), String(96 * MiB));
    await assert.rejects(new CgroupV1([]).setMemoryLimit(ID, MiB), /no cgroup v1 memory controller/);
  });

  test('listIds is the union over hierarchies; remove clears every hierarchy', async () => {
    const left = 'pidsonly000000000000';
    mkdirSync(join(root, 'pids', 'cordon', left));
    mkdirSync(join(root, 'systemd', 'cordon', left), { recursive: true });
    assert.deepEqual((await cg.listIds()).sort(), [ID, left].sort());
    await cg.remove(left);
    assert.equal(existsSync(join(root, 'pids', 'cordon', left)), false);
    assert.equal(existsSync(join(root, 'systemd', 'cordon', left)), false, 'named hierarchies too');
    assert.deepEqual(await cg.listIds(), [ID]);
  });
});

describe('freezing a whole sandbox through its cgroup (idle pause)', () => {
  test('v2: cgroup.freeze 1, done once cgroup.events says frozen; thaw writes 0; no cgroup.freeze means no freezer', async () => {
    const root = join(tmp, 'v2-freeze');
    const dir = join(root, 'cordon', ID);
    tree(root, { [`cordon/${ID}/cgroup.freeze`]: '0\n', [`cordon/${ID}/cgroup.events`]: 'populated 1\nfrozen 0\n' });
    const cg = new CgroupV2(root);
    assert.equal(await cg.isFrozen(ID), false);
    // The kernel reports "frozen 1" a little after the request; the freeze waits for it.
    setTimeout(() => writeFileSync(join(dir, 'cgroup.events'), 'populated 1\nfrozen 1\n'), 30);
    assert.equal(await cg.freeze(ID), true);
    assert.equal(readFileSync(join(dir, 'cgroup.freeze'), 'utf8'), '1');
    assert.equal(await cg.isFrozen(ID), true);
    await cg.thaw(ID);
    assert.equal(readFileSync(join(dir, 'cgroup.freeze'), 'utf8'), '0');
    assert.equal(await new CgroupV2(join(tmp, 'v2-nofreezer')).freeze(ID), false);
    await assert.rejects(cg.freeze('../escape'), /not a sandbox id/);
  });

  test('v1: freezer.state FROZEN where the freezer hierarchy is mounted; none mounted means no freezer', async () => {
    const root = join(tmp, 'v1-freeze');
    tree(root, { [`freezer/cordon/${ID}/freezer.state`]: 'THAWED\n' });
    const cg = new CgroupV1([{ mountPoint: join(root, 'freezer'), controllers: ['freezer'] }]);
    assert.equal(await cg.isFrozen(ID), false);
    assert.equal(await cg.freeze(ID), true);
    assert.equal(await cg.isFrozen(ID), true);
    await cg.thaw(ID);
    assert.equal(await cg.isFrozen(ID), false);
    assert.equal(await new CgroupV1([{ mountPoint: join(root, 'memory'), controllers: ['memory'] }]).freeze(ID), false);
  });
});
