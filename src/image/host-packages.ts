import { readFileSync, readdirSync } from 'node:fs';
import { runOk } from '../util/proc.js';

// When the Debian mirror cannot be reached, the base template can still be built from the packages
// this (Debian) host has installed: they are repacked into a local repository (host-repack.ts) and
// mmdebstrap installs from there. This module works out which installed packages that takes.

export interface InstalledPackage {
  /** dpkg's name for it, arch-qualified for Multi-Arch: same packages (libc6:amd64). */
  ref: string;
  name: string;
  arch: string;
  version: string;
  essential: boolean;
  priority: string;
  provides: string[];
  /** Depends and Pre-Depends, each clause a list of alternative package names. */
  depends: string[][];
}

export interface Closure {
  packages: InstalledPackage[];
  /** Names asked for (or depended on) that this host does not have installed. */
  missing: string[];
}

const FIELDS = ['binary:Package', 'Package', 'Architecture', 'Version', 'Essential', 'Priority', 'db:Status-Abbrev', 'Provides', 'Pre-Depends', 'Depends'];

/** The Debian codename of this host, or undefined when it is not Debian. */
export function hostCodename(osRelease = '/etc/os-release'): string | undefined {
  try {
    const text = readFileSync(osRelease, 'utf8');
    if (!/^ID=("?)debian\1$/m.test(text)) return undefined;
    return /^VERSION_CODENAME=("?)([a-z]+)\1$/m.exec(text)?.[2];
  } catch {
    return undefined;
  }
}

/** Names in a Depends-style field: "a (>= 1) | b:any, c" → [[a, b], [c]]. */
export function parseRelations(field: string): string[][] {
  return field
    .split(',')
    .map((clause) =>
      clause
        .split('|')
        .map((alt) => alt.trim().split(/[\s(]/)[0].replace(/:(any|native|amd64|all)$/, ''))
        .filter(Boolean),
    )
    .filter((alts) => alts.length > 0);
}

export function parseInstalled(queryOutput: string): InstalledPackage[] {
  const out: InstalledPackage[] = [];
  for (const line of queryOutput.split('\n')) {
    const f = line.split('\t');
    if (f.length < FIELDS.length || !f[6].startsWith('ii')) continue;
    out.push({
      ref: f[0],
      name: f[1],
      arch: f[2],
      version: f[3],
      essential: f[4] === 'yes',
      priority: f[5],
      provides: parseRelations(f[7]).map((alts) => alts[0]),
      depends: [...parseRelations(f[8]), ...parseRelations(f[9])],
    });
  }
  return out;
}

export async function installedPackages(): Promise<InstalledPackage[]> {
  const format = FIELDS.map((f) => '${' + f + '}').join('\t') + '\n';
  const r = await runOk('dpkg-query', ['-W', '-f', format], { timeoutMs: 60_000 });
  return parseInstalled(r.stdout);
}

/**
 * What minbase plus `wanted` needs, taken from installed packages only: every Essential or
 * Priority: required package, apt, the wanted ones, and everything they depend on (for each
 * dependency the first alternative that is installed, directly or through Provides).
 */
export function resolveClosure(installed: InstalledPackage[], wanted: string[], arches = ['amd64', 'all']): Closure {
  const byName = new Map<string, InstalledPackage>();
  const providers = new Map<string, InstalledPackage>();
  for (const p of installed) {
    if (!arches.includes(p.arch)) continue;
    byName.set(p.name, p);
    for (const v of p.provides) if (!providers.has(v)) providers.set(v, p);
  }
  const find = (name: string) => byName.get(name) ?? providers.get(name);
  const chosen = new Map<string, InstalledPackage>();
  const missing = new Set<string>();
  const queue: InstalledPackage[] = [];
  const add = (p: InstalledPackage) => {
    if (chosen.has(p.name)) return;
    chosen.set(p.name, p);
    queue.push(p);
  };
  for (const p of byName.values()) if (p.essential || p.priority === 'required') add(p);
  for (const name of ['apt', ...wanted]) {
    const p = find(name);
    if (p) add(p);
    else missing.add(name);
  }
  while (queue.length > 0) {
    const p = queue.shift()!;
    for (const alts of p.depends) {
      const hit = alts.map(find).find((x): x is InstalledPackage => x !== undefined);
      if (hit) add(hit);
      else missing.add(alts.join(' | '));
    }
  }
  return { packages: [...chosen.values()].sort((a, b) => a.name.localeCompare(b.name)), missing: [...missing].sort() };
}

/** Control files dpkg keeps per installed package (maintainer scripts, triggers, md5sums, ...), by dpkg ref. */
export function infoIndex(infoDir = '/var/lib/dpkg/info'): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  for (const entry of readdirSync(infoDir)) {
    const dot = entry.lastIndexOf('.');
    if (dot <= 0) continue;
    const ref = entry.slice(0, dot);
    if (!out.has(ref)) out.set(ref, new Map());
    out.get(ref)!.set(entry.slice(dot + 1), `${infoDir}/${entry}`);
  }
  return out;
}
