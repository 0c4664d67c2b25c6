import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rename, rm, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { deadlineError, killGroup } from '../util/proc.js';
import { debianMirror } from './apt-mirror.js';
import { hostCodename, installedPackages, resolveClosure } from './host-packages.js';
import { buildHostRepository } from './host-repack.js';
import { removeStaging, sweepStaleStaging } from './staging-dir.js';
import type { ImageConfig, RootfsSource } from '../engine/types.js';

/** A slow mirror takes minutes; one that stalls must not leave the daemon building forever. */
const MMDEBSTRAP_DEADLINE_MS = 20 * 60_000;

/** `--debian-mirror host`: build from this host's installed packages, no mirror. */
export const HOST_PACKAGES = 'host';
/** How long the mirror gets to answer before the build goes offline. */
const MIRROR_PROBE_MS = 15_000;

const hostFallbackPossible = () => hostCodename() === BASE_RECIPE.suite;

/** Why an http(s) mirror cannot be used right now, or undefined when it answers (any HTTP status). */
async function mirrorUnreachable(mirror: string): Promise<string | undefined> {
  if (!/^https?:\/\//.test(mirror)) return undefined;
  try {
    const res = await fetch(`${mirror.replace(/\/+$/, '')}/dists/${BASE_RECIPE.suite}/InRelease`, {
      method: 'HEAD',
      signal: AbortSignal.timeout(MIRROR_PROBE_MS),
    });
    await res.body?.cancel();
    return undefined;
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code;
    return cause ?? (e as Error).name;
  }
}

/** What the `base` template is made of; any change here changes its hash and causes a rebuild. */
export const BASE_RECIPE = {
  version: 1,
  suite: 'bookworm',
  variant: 'minbase',
  packages: ['bash', 'coreutils', 'procps', 'python3', 'nodejs', 'git', 'curl', 'ca-certificates', 'sudo', 'passwd', 'less', 'xz-utils', 'attr'],
  user: { name: 'user', uid: 1000, home: '/home/user' },
};

// No USER: root is the default anyway, and a template's own USER (root included) must stay
// distinguishable from none, since E2B's default user follows it (src/api/e2b/envd-context.ts).
export const BASE_CONFIG: ImageConfig = {
  env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8'],
  workdir: '/',
};

export function recipeHash(): string {
  return createHash('sha256').update(JSON.stringify(BASE_RECIPE)).digest('hex').slice(0, 16);
}

export type Progress = (line: string) => void;

/**
 * Builds `base` with mmdebstrap into the data directory on first use and reuses it until the recipe
 * changes. Concurrent callers share one build; a half-built tree is never taken as complete.
 */
export class BaseTemplate {
  private building?: Promise<RootfsSource>;
  constructor(private readonly templatesDir: string, private readonly mirrorOverride?: string) {}

  get dir(): string {
    return join(this.templatesDir, `base-${recipeHash()}`);
  }

  isBuilt(): boolean {
    return existsSync(join(this.dir, 'complete'));
  }

  async ensure(progress: Progress = () => {}): Promise<RootfsSource> {
    if (this.isBuilt()) return this.source();
    this.building ??= this.build(progress).finally(() => (this.building = undefined));
    return this.building;
  }

  private source(): RootfsSource {
    return { lowerDirs: [join(this.dir, 'rootfs')], config: BASE_CONFIG, ref: 'template:base' };
  }

  private async build(progress: Progress): Promise<RootfsSource> {
    const staging = `${this.dir}.partial-${process.pid}`;
    await sweepStaleStaging(this.dir);
    const recipe = await this.buildInto(staging, this.mirrorOverride || debianMirror(BASE_RECIPE.suite), progress);
    await writeFile(join(staging, 'recipe.json'), JSON.stringify(recipe, null, 2));
    await writeFile(join(staging, 'complete'), new Date().toISOString());
    // Another daemon sharing this templates directory may have finished first; its tree may already be
    // the lower layer of running sandboxes, so it is kept and this build is dropped.
    if (this.isBuilt()) {
      await removeStaging(staging);
      progress('template base ready (built meanwhile by another process)');
      return this.source();
    }
    await rm(this.dir, { recursive: true, force: true });
    await rename(staging, this.dir);
    progress('template base ready');
    return this.source();
  }

  /** From the mirror when it answers and the build works there; otherwise from the host's packages. */
  private async buildInto(staging: string, mirror: string | undefined, progress: Progress): Promise<Record<string, unknown>> {
    if (mirror && mirror !== HOST_PACKAGES) {
      const unreachable = await mirrorUnreachable(mirror);
      if (unreachable) {
        if (!hostFallbackPossible()) throw new Error(`the Debian mirror ${mirror} cannot be reached (${unreachable}); pass --debian-mirror URL`);
        progress(`the Debian mirror ${mirror} cannot be reached (${unreachable}); building from this host's installed packages`);
      } else {
        try {
          await this.mmdebstrap(staging, mirror, BASE_RECIPE.packages, progress);
          return { ...BASE_RECIPE, source: 'mirror' };
        } catch (e) {
          if (!hostFallbackPossible()) throw e;
          progress(`building from ${mirror} failed (${(e as Error).message}); trying this host's installed packages`);
        }
      }
    } else if (!mirror && !hostFallbackPossible()) {
      throw new Error(`no apt source for Debian ${BASE_RECIPE.suite} main found in /etc/apt; pass --debian-mirror URL`);
    }
    return this.buildFromHost(staging, progress);
  }

  /** The offline way: the host's own packages, repacked into a local repository (host-repack.ts). */
  private async buildFromHost(staging: string, progress: Progress): Promise<Record<string, unknown>> {
    if (!hostFallbackPossible()) throw new Error(`this host is not Debian ${BASE_RECIPE.suite}, so it cannot build base from its own packages; pass --debian-mirror URL`);
    const closure = resolveClosure(await installedPackages(), BASE_RECIPE.packages);
    const missing = BASE_RECIPE.packages.filter((p) => closure.missing.includes(p));
    progress(`building base from ${closure.packages.length} installed host packages${missing.length ? ` (not installed here, left out: ${missing.join(', ')})` : ''}`);
    const source = await buildHostRepository(closure.packages, join(this.templatesDir, 'host-packages'), BASE_RECIPE.suite, progress);
    const include = BASE_RECIPE.packages.filter((p) => !missing.includes(p));
    // The mirror's way to merged /usr is the usrmerge package, which hosts rarely keep installed;
    // usr-is-merged (which they do) needs the links made first, as debootstrap does.
    await this.mmdebstrap(staging, source, include, progress, ['--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr']);
    return { ...BASE_RECIPE, source: 'host-packages', missing };
  }

  private async mmdebstrap(staging: string, mirror: string, packages: string[], progress: Progress, extra: string[] = []): Promise<void> {
    await removeStaging(staging);
    await mkdir(staging, { recursive: true });
    const u = BASE_RECIPE.user;
    const hooks = [
      `chroot "$1" useradd --create-home --home-dir ${u.home} --shell /bin/bash --uid ${u.uid} --user-group ${u.name}`,
      // sudo is absent from a base built offline on a host that lacks it.
      `if [ -d "$1/etc/sudoers.d" ]; then echo '${u.name} ALL=(ALL) NOPASSWD:ALL' > "$1/etc/sudoers.d/${u.name}"; chmod 0440 "$1/etc/sudoers.d/${u.name}"; fi`,
      'rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*',
    ];
    const args = [
      `--variant=${BASE_RECIPE.variant}`,
      `--include=${packages.join(',')}`,
      ...extra,
      ...hooks.map((h) => `--customize-hook=${h}`),
      BASE_RECIPE.suite,
      join(staging, 'rootfs'),
      mirror,
    ];
    progress(`building template base (${BASE_RECIPE.suite}, ${packages.length} packages) from ${mirror}`);
    await new Promise<void>((resolve, reject) => {
      // Its own process group, killed whole at the deadline (apt, dpkg and hooks run under it).
      const child = spawn('mmdebstrap', args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const timer = setTimeout(() => {
        killGroup(child.pid);
        reject(deadlineError('mmdebstrap', MMDEBSTRAP_DEADLINE_MS));
      }, MMDEBSTRAP_DEADLINE_MS);
      let tail = '';
      const onLine = (d: Buffer) => {
        const text = d.toString();
        tail = (tail + text).slice(-4000);
        for (const l of text.split('\n')) if (l.trim()) progress(l.trim());
      };
      child.stdout.on('data', onLine);
      child.stderr.on('data', onLine);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`mmdebstrap could not start (${e.message}); install it with apt-get install mmdebstrap`));
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`mmdebstrap failed (exit ${code}): ${tail.trim().split('\n').slice(-5).join(' | ')}`));
      });
    }).catch(async (e) => {
      await removeStaging(staging).catch(() => {});
      throw e;
    });
  }

  async recipe(): Promise<unknown> {
    return JSON.parse(await readFile(join(this.dir, 'recipe.json'), 'utf8'));
  }
}
