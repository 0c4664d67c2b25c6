// Content-addressed copies of the programs bind-mounted into every sandbox: busybox, tini, the agent
// and its supervisor. A checkpoint (a pause to disk, a memory snapshot, a template's or a fork's)
// holds processes running these programs, and gVisor's restore maps their code from the files it is
// given: restored over a different build of the agent (any cordon upgrade) or an upgraded busybox,
// the sandbox's init dies at once. So a sandbox and a snapshot record the set they were started
// with, and a restore binds that set again; a new sandbox gets the current one.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

/** The programs a sandbox gets, by host path. */
export interface Helpers {
  busybox: string;
  tini: string;
  /** The agent binary and its supervisor; absent when sandboxes run without an agent. */
  agent?: { binary: string; supervisor: string };
}

/** A set of helper copies in the data directory, and its id (recorded with sandboxes and snapshots). */
export interface HelperSet extends Helpers {
  id: string;
}

const SET_ID = /^[0-9a-f]{16}$/;
const Manifest = z.object({
  busybox: z.string(),
  tini: z.string(),
  agent: z.object({ binary: z.string(), supervisor: z.string() }).optional(),
});

/** Every program a set names, by host path. */
const pathsOf = (set: Helpers): string[] => [set.busybox, set.tini, ...(set.agent ? [set.agent.binary, set.agent.supervisor] : [])];

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function syncFile(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function olderThanAnHour(path: string): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  return !!st && Date.now() - st.mtimeMs > 3_600_000;
}

export class HelperSets {
  private readonly files: string;
  private readonly sets: string;

  /** `dir`: a directory of the daemon's own data directory (only the daemon writes there). */
  constructor(dir: string) {
    this.files = join(dir, 'files');
    this.sets = join(dir, 'sets');
  }

  /** Copy the given programs in (each once per content) and return their set. */
  async install(h: Helpers): Promise<HelperSet> {
    await mkdir(this.files, { recursive: true, mode: 0o700 });
    await mkdir(this.sets, { recursive: true, mode: 0o700 });
    // A file already under a name is used only when its bytes still hash to it (a crash can leave a
    // short file behind a rename that was never synced); the usual start, with nothing changed, then
    // copies nothing. Otherwise the name is the hash of the copy itself (a source replaced meanwhile
    // cannot give a name other bytes), synced before its rename.
    const intact = async (dest: string, hash: string) => existsSync(dest) && (await sha256(dest).catch(() => '')).startsWith(hash);
    const copy = async (name: string, src: string): Promise<string> => {
      const srcHash = (await sha256(src)).slice(0, 32);
      const known = join(this.files, `${name}-${srcHash}`);
      if (await intact(known, srcHash)) return known;
      const tmp = join(this.files, `.${name}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
      try {
        await copyFile(src, tmp);
        await chmod(tmp, 0o555);
        await syncFile(tmp);
        const hash = (await sha256(tmp)).slice(0, 32);
        const dest = join(this.files, `${name}-${hash}`);
        if (await intact(dest, hash)) return dest;
        await rename(tmp, dest);
        return dest;
      } finally {
        await rm(tmp, { force: true });
      }
    };
    const set: Helpers = {
      busybox: await copy('busybox', h.busybox),
      tini: await copy('tini', h.tini),
      ...(h.agent ? { agent: { binary: await copy('agent', h.agent.binary), supervisor: await copy('supervise', h.agent.supervisor) } } : {}),
    };
    const doc = JSON.stringify(set);
    const id = createHash('sha256').update(doc).digest('hex').slice(0, 16);
    const path = join(this.sets, `${id}.json`);
    if ((await readFile(path, 'utf8').catch(() => '')) !== doc) {
      const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      try {
        await writeFile(tmp, doc);
        await syncFile(tmp);
        await rename(tmp, path);
      } finally {
        await rm(tmp, { force: true });
      }
    }
    return { id, ...set };
  }

  /**
   * Remove the sets nothing can restore with any more and the files no kept set names (each upgrade
   * adds an agent build of a few MiB). `keep`: the current set and every set a sandbox's bundle or a
   * snapshot records. Run before the daemon serves, so no restore or install runs meanwhile; a
   * temporary file is removed only once it is an hour old (another install may be writing it).
   */
  async collect(keep: Iterable<string>): Promise<{ sets: number; files: number }> {
    const kept = new Set(keep);
    const named = new Set<string>();
    const removed = { sets: 0, files: 0 };
    for (const name of await readdir(this.sets).catch(() => [] as string[])) {
      const path = join(this.sets, name);
      const id = name.endsWith('.json') ? name.slice(0, -'.json'.length) : undefined;
      if (id && kept.has(id)) {
        // Unreadable: kept as it is (get() refuses it); its files may go.
        const set = this.manifest(id);
        if (set) for (const p of pathsOf(set)) named.add(p);
        continue;
      }
      if (!id && !(await olderThanAnHour(path))) continue;
      await rm(path, { force: true });
      if (id) removed.sets++;
    }
    for (const name of await readdir(this.files).catch(() => [] as string[])) {
      const path = join(this.files, name);
      if (named.has(path) || (name.startsWith('.') && !(await olderThanAnHour(path)))) continue;
      await rm(path, { force: true });
      removed.files++;
    }
    return removed;
  }

  /** A set's manifest as written, or undefined when missing or unreadable. */
  private manifest(id: string): Helpers | undefined {
    try {
      return Manifest.parse(JSON.parse(readFileSync(join(this.sets, `${id}.json`), 'utf8')));
    } catch {
      return undefined;
    }
  }

  /** A recorded set, when its id is well-formed and its files are all still here. */
  get(id: string | undefined): HelperSet | undefined {
    const set = id && SET_ID.test(id) ? this.manifest(id) : undefined;
    return set && pathsOf(set).every((p) => p.startsWith(`${this.files}/`) && existsSync(p)) ? { id: id!, ...set } : undefined;
  }

  /** The set id recorded in a file (a sandbox's bundle), or undefined. */
  static async readId(path: string): Promise<string | undefined> {
    const id = (await readFile(path, 'utf8').catch(() => '')).trim();
    return SET_ID.test(id) ? id : undefined;
  }
}
