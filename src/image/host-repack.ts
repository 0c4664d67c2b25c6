import { createHash } from 'node:crypto';
import { createReadStream, existsSync, lstatSync, readlinkSync, statSync, type Stats } from 'node:fs';
import { chmod, chown, copyFile, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from '../util/proc.js';
import { infoIndex, type InstalledPackage } from './host-packages.js';

// Turns installed packages back into .deb files (what dpkg-repack does) and indexes them as a flat
// apt repository, so mmdebstrap can build the base template with no mirror. Everything read here
// belongs to the host's own dpkg database and the files it lists; nothing comes from a sandbox.

/** Control files copied from dpkg's database into the package; the first five are scripts. */
const CONTROL_FILES = ['preinst', 'postinst', 'prerm', 'postrm', 'config', 'templates', 'triggers', 'shlibs', 'symbols', 'md5sums'];
const SCRIPTS = new Set(CONTROL_FILES.slice(0, 5));
/** Fields that describe the installed state, not the package. */
const STATE_FIELDS = new Set(['status', 'config-version', 'conffiles']);

export interface RepackedControl {
  control: string;
  conffiles: string[];
}

/** `dpkg-query -s` output → the package's control file and its live conffiles. */
export function controlFromStatus(status: string): RepackedControl {
  const kept: string[] = [];
  const conffiles: string[] = [];
  let field = '';
  for (const line of status.split('\n')) {
    if (!line.trim()) continue;
    if (/^\s/.test(line)) {
      if (field === 'conffiles') {
        const [path, , flag] = line.trim().split(/\s+/);
        if (path?.startsWith('/') && flag !== 'obsolete' && flag !== 'remove-on-upgrade') conffiles.push(path);
      } else if (!STATE_FIELDS.has(field)) kept.push(line);
      continue;
    }
    field = line.slice(0, line.indexOf(':')).toLowerCase();
    if (!STATE_FIELDS.has(field)) kept.push(line);
  }
  return { control: kept.join('\n') + '\n', conffiles };
}

export function debFileName(p: Pick<InstalledPackage, 'name' | 'version' | 'arch'>): string {
  return `${p.name}_${p.version.replace(/:/g, '%3a')}_${p.arch}.deb`;
}

async function sameOwnerMode(path: string, st: Stats): Promise<void> {
  await chown(path, st.uid, st.gid);
  await chmod(path, st.mode & 0o7777);
}

/** Copy the files dpkg lists for `p` into `tree`; directories are made real even where the host has a symlink (merged /usr). */
async function copyFiles(p: InstalledPackage, tree: string, work: string): Promise<void> {
  const listed = (await runOk('dpkg-query', ['-L', p.ref], { timeoutMs: 60_000 })).stdout
    .split('\n')
    .filter((l) => l.startsWith('/') && l !== '/.');
  const parents = new Set<string>();
  for (const path of listed) for (let i = path.lastIndexOf('/'); i > 0; i = path.lastIndexOf('/', i - 1)) parents.add(path.slice(0, i));
  const files: string[] = [];
  for (const path of listed) {
    let st: Stats;
    try {
      st = lstatSync(path);
      if (st.isSymbolicLink() && parents.has(path)) st = statSync(path);
    } catch {
      continue; // left out by dpkg's path-exclude (docs, locales) or removed by hand
    }
    // /bin -> usr/bin and friends: mmdebstrap sets up merged /usr itself and refuses them twice.
    if (st.isSymbolicLink() && /^\/[^/]+$/.test(path) && readlinkSync(path) === `usr${path}`) continue;
    if (st.isDirectory()) {
      await mkdir(join(tree, path), { recursive: true });
      await sameOwnerMode(join(tree, path), st);
    } else files.push(path.slice(1));
  }
  if (files.length === 0) return;
  const list = join(work, 'files');
  const archive = join(work, 'files.tar');
  await writeFile(list, files.join('\0'));
  await runOk('tar', ['-C', '/', '--no-recursion', '--null', '-T', list, '-cf', archive], { timeoutMs: 300_000 });
  await runOk('tar', ['-C', tree, '--same-owner', '-xpf', archive], { timeoutMs: 300_000 });
  await rm(archive, { force: true });
}

/** Repack one installed package into `repoDir`; an existing file of the same version is reused. */
export async function repackInstalled(p: InstalledPackage, repoDir: string, info: Map<string, Map<string, string>>): Promise<string> {
  const out = join(repoDir, debFileName(p));
  if (existsSync(out)) return out;
  const work = join(repoDir, `.work-${p.name}`);
  const tree = join(work, 'tree');
  await rm(work, { recursive: true, force: true });
  await mkdir(join(tree, 'DEBIAN'), { recursive: true });
  try {
    const status = (await runOk('dpkg-query', ['-s', p.ref], { timeoutMs: 60_000 })).stdout;
    const { control, conffiles } = controlFromStatus(status);
    await copyFiles(p, tree, work);
    await writeFile(join(tree, 'DEBIAN', 'control'), control);
    const present = conffiles.filter((c) => existsSync(join(tree, c)));
    if (present.length > 0) await writeFile(join(tree, 'DEBIAN', 'conffiles'), present.join('\n') + '\n');
    for (const [kind, path] of info.get(p.ref) ?? []) {
      if (!CONTROL_FILES.includes(kind)) continue;
      const dest = join(tree, 'DEBIAN', kind);
      await copyFile(path, dest);
      await chmod(dest, SCRIPTS.has(kind) ? 0o755 : 0o644);
    }
    // Uncompressed: the repository lives next to the template and is read once.
    await runOk('dpkg-deb', ['-Znone', '--build', tree, `${out}.partial`], { timeoutMs: 300_000, label: `dpkg-deb --build ${p.name}` });
    await rename(`${out}.partial`, out);
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

function sha256(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

/** Write the flat repository's Packages index and Release file over every .deb in `repoDir`. */
export async function writePackagesIndex(repoDir: string, suite: string): Promise<void> {
  const stanzas: string[] = [];
  for (const file of (await readdir(repoDir)).filter((f) => f.endsWith('.deb')).sort()) {
    const path = join(repoDir, file);
    const control = (await runOk('dpkg-deb', ['-f', path], { timeoutMs: 60_000 })).stdout.trimEnd();
    stanzas.push(`${control}\nFilename: ./${file}\nSize: ${statSync(path).size}\nSHA256: ${await sha256(path)}\n`);
  }
  const index = stanzas.join('\n');
  await writeFile(join(repoDir, 'Packages'), index);
  // mmdebstrap picks the essential set by archive/codename, which only a Release file names.
  const digest = createHash('sha256').update(index).digest('hex');
  await writeFile(
    join(repoDir, 'Release'),
    `Origin: cordon host packages\nSuite: ${suite}\nCodename: ${suite}\nArchitectures: amd64 all\nSHA256:\n ${digest} ${Buffer.byteLength(index)} Packages\n`,
  );
}

/** Repack every package of `packages` into `repoDir` and index it; returns the apt source line for it. */
export async function buildHostRepository(packages: InstalledPackage[], repoDir: string, suite: string, progress: (l: string) => void): Promise<string> {
  await mkdir(repoDir, { recursive: true, mode: 0o700 });
  const info = infoIndex();
  let done = 0;
  for (const p of packages) {
    await repackInstalled(p, repoDir, info);
    if (++done % 25 === 0 || done === packages.length) progress(`repacked ${done}/${packages.length} host packages`);
  }
  // Versions from an earlier build of another host state are not part of this closure.
  const wanted = new Set(packages.map(debFileName));
  for (const f of await readdir(repoDir)) if (f.endsWith('.deb') && !wanted.has(f)) await rm(join(repoDir, f), { force: true });
  await writePackagesIndex(repoDir, suite);
  // copy:// (not file://) because mmdebstrap installs from inside the chroot, which cannot see repoDir.
  return `deb [trusted=yes] copy://${repoDir} ./`;
}
