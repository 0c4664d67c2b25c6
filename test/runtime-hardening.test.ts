// Runtime hardening on every runtime: Docker's seccomp profile and capability set under crun/runc,
// sudo and the per-sandbox no_new_privileges option, and user.* extended attributes in the rootfs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sandbox } from '../src/sdk/index.js';
import { cli, startDaemon, type TestDaemon } from './helpers/daemon.js';
import { rejectsWith } from './helpers/assert.js';

type RuntimeName = 'runsc' | 'crun' | 'runc';
const RUNTIMES = (process.env.CORDON_TEST_RUNTIMES ?? 'runsc,crun,runc').split(',') as RuntimeName[];

/** A base template built offline (no mirror reachable) has no sudo when the host lacks it; see base-template.ts. */
const NO_SUDO = 'the base template was built from host packages without sudo (no Debian mirror was reachable)';
async function hasSudo(s: Sandbox): Promise<boolean> {
  return (await s.exec(['sh', '-c', 'command -v sudo'])).exit_code === 0;
}

/** Docker's default capability set as /proc/PID/status prints it. */
const DOCKER_CAPS = '00000000a80425fb';
/** The same without CAP_NET_RAW, which gVisor leaves out unless runsc runs with --net-raw. */
const DOCKER_CAPS_NO_NET_RAW = '00000000a80405fb';

/** Release date of the installed gVisor (runsc --version: "0.0~20240729.0" or "release-20260520.0"). */
function gvisorRelease(): number {
  try {
    const v = execFileSync('runsc', ['--version'], { encoding: 'utf8', timeout: 30_000 });
    return Number(/(20\d{6})\.\d+/.exec(v)?.[1] ?? 0);
  } catch {
    return 0;
  }
}
const GVISOR = gvisorRelease();
// gVisor before release-20250820.0 hard-wires no_new_privs (execve ignores set-user-ID bits), and its
// gofer refuses setxattr on host files before release-20260520.0; cordon cannot change either.
const RUNSC_SETUID = GVISOR >= 20250820;
const RUNSC_XATTRS = GVISOR >= 20260520;
const runscSkip = (runtime: RuntimeName, supported: boolean, what: string) =>
  runtime === 'runsc' && !supported ? `gVisor ${GVISOR} ${what}; needs a newer runsc (see README)` : false;

/** Python run inside the sandbox: each named raw syscall, printed as "name errno". */
const SYSCALL_PROBE = `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
for name, nr, args in [('keyctl', 250, (0, 0, 0, 0, 0)), ('io_uring_setup', 425, (1, params)), ('bpf', 321, (0, 0, 0))]:
    r = libc.syscall(nr, *args)
    print(name, ctypes.get_errno() if r < 0 else 0)
`;
const EPERM = 1;
const ENOSYS = 38;

const status = async (s: Sandbox, field: string, user = 'root') => {
  const r = await s.exec(['sh', '-c', `grep '^${field}:' /proc/self/status | cut -f2`], { user });
  assert.equal(r.exit_code, 0, r.stderr);
  return r.stdout.trim();
};
const prctlNoNewPrivs = async (s: Sandbox, user: string) => {
  const r = await s.exec(['python3', '-c', 'import ctypes; print(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))'], { user });
  assert.equal(r.exit_code, 0, r.stderr);
  return r.stdout.trim();
};

let d: TestDaemon;

before(async () => {
  d = await startDaemon('hardening');
});
after(async () => {
  for (const s of await d.client.list().catch(() => [])) await d.client.remove(s.id, { force: true }).catch(() => {});
  await d.cleanup();
});

for (const runtime of RUNTIMES) {
  describe(`hardening on ${runtime}`, () => {
    const shared = runtime !== 'runsc';
    let plain: Sandbox;
    let nnp: Sandbox;
    before(async () => {
      plain = await d.client.create({ runtime, labels: { suite: 'hardening' } });
      nnp = await d.client.create({ runtime, no_new_privileges: true, labels: { suite: 'hardening' } });
      // A set-user-ID root copy of id: its effective uid shows whether execve granted privileges.
      for (const s of [plain, nnp]) {
        const r = await s.exec(['sh', '-c', 'cp /usr/bin/id /usr/local/bin/id-suid && chmod 4755 /usr/local/bin/id-suid']);
        assert.equal(r.exit_code, 0, r.stderr);
      }
    });
    after(async () => {
      await plain?.remove().catch(() => {});
      await nnp?.remove().catch(() => {});
    });

    test('seccomp: Docker\'s default profile is in force; namespaces, keys, mounts, io_uring and bpf are refused', { skip: !shared && 'gVisor is itself the syscall boundary' }, async () => {
      assert.equal(await status(plain, 'Seccomp'), '2', 'filter mode');
      assert.equal(await status(plain, 'Seccomp', 'user'), '2', 'filter mode for a user process too');
      const u = await plain.exec(['unshare', '-U', 'true']);
      assert.notEqual(u.exit_code, 0, 'unshare -U is refused');
      assert.match(u.stderr, /Operation not permitted/);
      const m = await plain.exec(['mount', '-t', 'tmpfs', 'none', '/mnt']);
      assert.notEqual(m.exit_code, 0, 'mount is refused');
      const p = await plain.exec(['python3', '-c', SYSCALL_PROBE]);
      assert.equal(p.exit_code, 0, p.stderr);
      for (const line of p.stdout.trim().split('\n')) {
        const [name, errno] = line.split(' ');
        assert.ok([EPERM, ENOSYS].includes(Number(errno)), `${name} fails with EPERM or ENOSYS as root (got errno ${errno})`);
      }
    });

    test('masked paths: Docker\'s list, e.g. /proc/acpi (present on this host) has something mounted over it', { skip: !shared && 'gVisor has its own /proc' }, async () => {
      const r = await plain.exec(['sh', '-c', "ls -d /proc/acpi >/dev/null && awk '$5 == \"/proc/acpi\"' /proc/self/mountinfo"]);
      assert.equal(r.exit_code, 0, r.stderr);
      assert.notEqual(r.stdout.trim(), '', '/proc/acpi is masked');
    });

    test('capabilities: Docker\'s default set for root, nothing effective for a user', async () => {
      const rootSet = shared ? DOCKER_CAPS : DOCKER_CAPS_NO_NET_RAW;
      assert.equal(await status(plain, 'CapEff'), rootSet);
      assert.equal(await status(plain, 'CapPrm'), rootSet);
      assert.equal(await status(plain, 'CapBnd'), rootSet);
      assert.equal(await status(plain, 'CapEff', 'user'), '0000000000000000');
      assert.equal(await status(plain, 'CapPrm', 'user'), '0000000000000000');
      assert.equal(await status(plain, 'CapBnd', 'user'), rootSet, 'the bounding set is the same for every uid');
    });

    test('sudo works for user, and setuid binaries are honoured', { skip: runscSkip(runtime, RUNSC_SETUID, 'hard-wires no_new_privs') }, async (t) => {
      if (!(await hasSudo(plain))) return t.skip(NO_SUDO);
      const r = await plain.exec(['sh', '-c', 'sudo -n true && sudo -n id -u'], { user: 'user' });
      assert.equal(r.exit_code, 0, r.stderr);
      assert.equal(r.stdout, '0\n');
      assert.equal(await prctlNoNewPrivs(plain, 'user'), '0');
      assert.equal((await plain.exec(['id-suid', '-u'], { user: 'user' })).stdout, '0\n');
    });

    test('no_new_privileges: sudo fails, the flag is set and setuid grants nothing', async () => {
      assert.equal(nnp.info.config.no_new_privileges, true);
      if (await hasSudo(nnp)) {
        const r = await nnp.exec(['sudo', '-n', 'true'], { user: 'user' });
        assert.notEqual(r.exit_code, 0, 'sudo is refused');
        assert.match(r.stderr, /no new privileges/);
      }
      assert.equal(await prctlNoNewPrivs(nnp, 'user'), '1');
      assert.equal(await prctlNoNewPrivs(nnp, 'root'), '1');
      // gVisor's /proc/PID/status has no NoNewPrivs line; the prctl above is its answer.
      if (shared) assert.equal(await status(nnp, 'NoNewPrivs', 'user'), '1');
      assert.equal((await nnp.exec(['id-suid', '-u'], { user: 'user' })).stdout, '1000\n');
    });

    test("the init's stdio lead to the sandbox's /dev/null, not to a host file a sandbox could fill", async () => {
      // The runtime hands the init its own stdio: a file on the host (the shim's create log).
      const r = await plain.exec(['sh', '-c', 'readlink /proc/1/fd/0 /proc/1/fd/1 /proc/1/fd/2; head -c 1048576 /dev/zero > /proc/1/fd/1 && head -c 1048576 /dev/zero > /proc/1/fd/2 && echo wrote']);
      assert.equal(r.exit_code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n'), ['/dev/null', '/dev/null', '/dev/null', 'wrote']);
      const log = statSync(join(d.dataDir, 'sandboxes', plain.id, 'bundle', 'create.log')).size;
      assert.ok(log < 4096, `the host-side log grew to ${log} bytes`);
      assert.equal((await plain.exec(['sh', '-c', 'cat /proc/1/cmdline | tr "\\0" " "'])).stdout.split(' ')[0], '/.cordon/tini', 'the init execs in place (pid 1 is tini)');
    });

    test('user.* extended attributes on rootfs files, as root and as user', { skip: runscSkip(runtime, RUNSC_XATTRS, "refuses setxattr on the gofer-backed rootfs") }, async () => {
      for (const [user, dir] of [['root', '/root'], ['user', '/home/user'], ['root', '/usr/local/share']]) {
        const r = await plain.exec(['sh', '-c', 'touch f && setfattr -n user.x -v 1 f && getfattr -n user.x --only-values f'], { user, cwd: dir });
        assert.equal(r.exit_code, 0, `${user} in ${dir}: ${r.stderr}`);
        assert.equal(r.stdout, '1');
      }
    });
  });
}

describe('no_new_privileges option', () => {
  test('kept across stop and start; set from the CLI; validated', async () => {
    const runtime = RUNTIMES.find((r) => r !== 'runsc') ?? RUNTIMES[0];
    const c = await cli(d, ['create', '--runtime', runtime, '--no-new-privileges', '--json']);
    assert.equal(c.code, 0, c.stderr);
    const info = JSON.parse(c.stdout) as { id: string; config: { no_new_privileges: boolean } };
    assert.equal(info.config.no_new_privileges, true);
    const s = await d.client.get(info.id);
    await s.stop();
    await s.start();
    assert.equal(await prctlNoNewPrivs(s, 'user'), '1', 'still set after a restart of the sandbox');
    assert.equal((await d.client.get(info.id)).info.config.no_new_privileges, true);
    await s.remove({ force: true });

    const plain = await cli(d, ['create', '--runtime', runtime, '--json']);
    assert.equal(plain.code, 0, plain.stderr);
    const p = JSON.parse(plain.stdout) as { id: string; config: { no_new_privileges: boolean } };
    assert.equal(p.config.no_new_privileges, false, 'off by default');
    await d.client.remove(p.id, { force: true });

    await rejectsWith(d.client.create({ runtime, no_new_privileges: 'yes' as never }), 'invalid_argument', /no_new_privileges/);
  });
});
