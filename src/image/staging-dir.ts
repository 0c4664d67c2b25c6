import { readdir, readFile, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { pidAlive, run } from '../util/proc.js';

// A build killed half-way (a deadline, a daemon that was stopped) leaves mmdebstrap's mounts
// (proc, sys, devpts, tmpfs) inside its staging tree; a recursive remove would walk into them.

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** Mount points at or under `dir`, deepest first. */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  return info
    .split('\n')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** Unmount whatever is mounted inside `dir` (lazily, so a busy one cannot hold us), then delete it. */
export async function removeStaging(dir: string): Promise<void> {
  for (const m of await mountsUnder(dir)) await run('umount', ['-l', m], { timeoutMs: 10_000 }).catch(() => {});
  if ((await mountsUnder(dir)).length) throw new Error(`cannot remove ${dir}: something is still mounted inside it`);
  await rm(dir, { recursive: true, force: true });
}

/** Remove `<target>.partial-PID` trees whose builder process is gone. */
export async function sweepStaleStaging(target: string): Promise<void> {
  const prefix = `${basename(target)}.partial-`;
  const names = await readdir(dirname(target)).catch(() => [] as string[]);
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const pid = Number(n.slice(prefix.length));
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) continue;
    await removeStaging(join(dirname(target), n)).catch(() => {});
  }
}
