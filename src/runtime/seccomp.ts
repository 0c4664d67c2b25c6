import { existsSync, readFileSync } from 'node:fs';
import { endianness, release } from 'node:os';
import { fileURLToPath } from 'node:url';

// Docker's default seccomp profile (data in ./seccomp, source named in its README) turned into the
// OCI `linux.seccomp` object for crun/runc, filtered the way Docker filters it: by this host's
// architecture, the sandbox's bounding capabilities and the running kernel's version.

interface Filter {
  caps?: string[];
  arches?: string[];
  minKernel?: string;
}

interface ArgRule {
  index: number;
  value: number;
  valueTwo?: number;
  op: string;
}

interface ProfileRule {
  names?: string[];
  name?: string;
  action: string;
  errnoRet?: number;
  args?: ArgRule[] | null;
  includes?: Filter;
  excludes?: Filter;
}

interface Profile {
  defaultAction: string;
  defaultErrnoRet?: number;
  archMap?: { architecture: string; subArchitectures: string[] | null }[];
  syscalls: ProfileRule[];
}

export interface OciSeccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: { names: string[]; action: string; errnoRet?: number; args?: ArgRule[] }[];
}

/** Node's process.arch as libseccomp's native name (what the profile's `arches` filters use). */
function nativeArch(): string {
  switch (process.arch as string) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return 'x86';
    case 'ppc64':
      return endianness() === 'LE' ? 'ppc64le' : 'ppc64';
    case 'loong64':
      return 'loong64';
    default:
      return process.arch; // arm64, arm, s390x, riscv64 are spelled the same
  }
}

const SCMP_ARCH: Record<string, string> = {
  amd64: 'SCMP_ARCH_X86_64',
  x86: 'SCMP_ARCH_X86',
  arm64: 'SCMP_ARCH_AARCH64',
  arm: 'SCMP_ARCH_ARM',
  s390x: 'SCMP_ARCH_S390X',
  ppc64le: 'SCMP_ARCH_PPC64LE',
  ppc64: 'SCMP_ARCH_PPC64',
  riscv64: 'SCMP_ARCH_RISCV64',
  loong64: 'SCMP_ARCH_LOONGARCH64',
};

function kernelAtLeast(min: string, running: string): boolean {
  const parse = (v: string) => v.split(/[.-]/).slice(0, 2).map((n) => Number.parseInt(n, 10) || 0);
  const [a, b] = parse(running);
  const [x, y] = parse(min);
  return a !== x ? a > x : b >= y;
}

export interface SeccompHost {
  arch: string;
  kernel: string;
}

const thisHost = (): SeccompHost => ({ arch: nativeArch(), kernel: release() });

/** Docker's rule filter: every `includes` condition must hold, any `excludes` condition drops the rule. */
function keep(rule: ProfileRule, bounding: string[], host: SeccompHost): boolean {
  const ex = rule.excludes;
  if (ex) {
    if (ex.arches?.includes(host.arch)) return false;
    if (ex.caps?.some((c) => bounding.includes(c))) return false;
    if (ex.minKernel && kernelAtLeast(ex.minKernel, host.kernel)) return false;
  }
  const inc = rule.includes;
  if (inc) {
    if (inc.arches?.length && !inc.arches.includes(host.arch)) return false;
    if (inc.caps?.length && !inc.caps.every((c) => bounding.includes(c))) return false;
    if (inc.minKernel && !kernelAtLeast(inc.minKernel, host.kernel)) return false;
  }
  return true;
}

/** Translate a profile in Docker's format for a process whose bounding set is `bounding`. */
export function translateProfile(profile: Profile, bounding: string[], host: SeccompHost = thisHost()): OciSeccomp {
  const native = SCMP_ARCH[host.arch];
  const entry = profile.archMap?.find((a) => a.architecture === native);
  const architectures = entry ? [entry.architecture, ...(entry.subArchitectures ?? [])] : [];
  const syscalls = profile.syscalls
    .filter((r) => keep(r, bounding, host))
    .map((r) => ({
      names: r.names?.length ? r.names : [r.name!],
      action: r.action,
      ...(r.errnoRet !== undefined ? { errnoRet: r.errnoRet } : {}),
      ...(r.args?.length ? { args: r.args } : {}),
    }));
  return {
    defaultAction: profile.defaultAction,
    ...(profile.defaultErrnoRet !== undefined ? { defaultErrnoRet: profile.defaultErrnoRet } : {}),
    architectures,
    syscalls,
  };
}

// tsc does not copy JSON it is not asked to import, so the profile is read from the source tree:
// next to this module when run from src/, or from src/ when run from dist/src/.
const PROFILE_CANDIDATES = ['./seccomp/docker-default.json', '../../../src/runtime/seccomp/docker-default.json'];

let cached: Profile | undefined;
export function dockerDefaultProfile(): Profile {
  if (cached) return cached;
  const path = PROFILE_CANDIDATES.map((p) => fileURLToPath(new URL(p, import.meta.url))).find((p) => existsSync(p));
  if (!path) throw new Error('the seccomp profile src/runtime/seccomp/docker-default.json is missing; reinstall cordon');
  const profile = JSON.parse(readFileSync(path, 'utf8')) as Profile;
  if (typeof profile.defaultAction !== 'string' || !Array.isArray(profile.syscalls)) {
    throw new Error(`${path} is not a seccomp profile in Docker's format`);
  }
  cached = profile;
  return profile;
}

const byBounding = new Map<string, OciSeccomp>();
/** Docker's default profile for a sandbox with this bounding set, built once per set. */
export function defaultSeccomp(bounding: string[]): OciSeccomp {
  const key = bounding.join(',');
  let s = byBounding.get(key);
  if (!s) byBounding.set(key, (s = translateProfile(dockerDefaultProfile(), bounding)));
  return s;
}
