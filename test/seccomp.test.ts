// Unit test of the seccomp profile translation (src/runtime/seccomp.ts): Docker's include/exclude
// rules by capability, architecture and kernel version, on the real profile and on a small one.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CAPS } from '../src/runtime/oci-spec.js';
import { defaultSeccomp, dockerDefaultProfile, translateProfile } from '../src/runtime/seccomp.js';

const names = (s: ReturnType<typeof translateProfile>) => s.syscalls.flatMap((r) => r.names);
const amd64 = { arch: 'amd64', kernel: '6.18.0' };
const arm64 = { arch: 'arm64', kernel: '6.18.0' };

test("Docker's profile for our capability set on x86_64 and aarch64", () => {
  const x = translateProfile(dockerDefaultProfile(), CAPS, amd64);
  assert.equal(x.defaultAction, 'SCMP_ACT_ERRNO');
  assert.equal(x.defaultErrnoRet, 1);
  assert.deepEqual(x.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
  const allowed = names(x);
  for (const n of ['read', 'execve', 'arch_prctl', 'chroot', 'clone', 'ptrace']) assert.ok(allowed.includes(n), `${n} allowed`);
  for (const n of ['unshare', 'mount', 'keyctl', 'bpf', 'io_uring_setup', 'setns', 'reboot', 'init_module', 'open_by_handle_at']) {
    assert.ok(!x.syscalls.some((r) => r.names.includes(n) && r.action === 'SCMP_ACT_ALLOW' && !r.args), `${n} not allowed outright`);
  }
  const clone3 = x.syscalls.find((r) => r.names.includes('clone3'));
  assert.deepEqual(clone3, { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 }, 'clone3 answers ENOSYS without CAP_SYS_ADMIN');
  assert.ok(x.syscalls.every((r) => !('includes' in r) && !('excludes' in r) && !('comment' in r)), 'only OCI fields remain');

  const a = translateProfile(dockerDefaultProfile(), CAPS, arm64);
  assert.deepEqual(a.architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
  assert.ok(!names(a).includes('arch_prctl'), 'x86-only calls are dropped on aarch64');
  assert.ok(names(a).includes('arm_fadvise64_64'));
  assert.equal(defaultSeccomp(CAPS), defaultSeccomp([...CAPS]), 'built once per capability set');
});

test('include and exclude rules: capabilities (all of), architectures, minimum kernel', () => {
  const profile = {
    defaultAction: 'SCMP_ACT_ERRNO',
    archMap: [{ architecture: 'SCMP_ARCH_X86_64', subArchitectures: null }],
    syscalls: [
      { names: ['a'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_X', 'CAP_Y'] } },
      { names: ['b'], action: 'SCMP_ACT_ALLOW', excludes: { caps: ['CAP_Y'] } },
      { names: ['c'], action: 'SCMP_ACT_ALLOW', includes: { minKernel: '6.19' } },
      { names: ['d'], action: 'SCMP_ACT_ALLOW', includes: { minKernel: '4.8' }, excludes: { arches: ['arm64'] } },
      { name: 'e', action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }] },
    ],
  };
  assert.deepEqual(names(translateProfile(profile, ['CAP_X'], amd64)), ['b', 'd', 'e']);
  assert.deepEqual(names(translateProfile(profile, ['CAP_X', 'CAP_Y'], amd64)), ['a', 'd', 'e']);
  assert.deepEqual(names(translateProfile(profile, [], { arch: 'arm64', kernel: '6.19.2' })), ['b', 'c', 'e']);
  assert.deepEqual(translateProfile(profile, [], arm64).architectures, [], 'an arch the profile does not map gets no architectures list');
  assert.deepEqual(translateProfile(profile, [], amd64).syscalls.at(-1), { names: ['e'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 1, op: 'SCMP_CMP_EQ' }] });
});
