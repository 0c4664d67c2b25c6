// Copying a sandbox's writable layer into a read-only snapshot layer. The layer is the sandbox's
// work: it may hold symlinks to anywhere, FIFOs, sockets, device nodes (overlay whiteouts are 0/0
// character devices), deep trees and millions of files. GNU cp in a child process with a deadline
// copies it as it is: links as links (never followed), special files recreated with mknod (never
// opened), xattrs (overlay opaque markers) kept, hard links kept within the copy, and never
// crossing into another file system.
import { rename, rm, statfs } from 'node:fs/promises';
import { CordonError } from '../errors/registry.js';
import { run, runOk } from '../util/proc.js';

/** A layer bigger than this takes long to copy while its sandbox is frozen; the deadline bounds it. */
export const LAYER_COPY_DEADLINE_MS = 10 * 60_000;
const DU_DEADLINE_MS = 2 * 60_000;

/** Bytes the layer occupies on disk (its blocks), counted by du in a child process with a deadline. */
export async function layerBytes(dir: string): Promise<number> {
  const r = await run('du', ['-s', '-x', '-B1', '--', dir], { timeoutMs: DU_DEADLINE_MS, label: 'du of a sandbox layer' });
  const n = Number(r.stdout.split('\t')[0]);
  if (!Number.isFinite(n)) throw new Error(`du of ${dir} failed: ${r.stderr.trim().split('\n')[0]}`);
  return n;
}

/**
 * Refuse (507) when copying `bytes` into `dir`'s file system would leave less than `reserveBytes`
 * free there. The sandbox keeps running; nothing was copied.
 */
export async function assertRoomFor(dir: string, bytes: number, reserveBytes: number): Promise<void> {
  const st = await statfs(dir);
  const free = st.bavail * st.bsize;
  if (free - bytes < reserveBytes) {
    throw new CordonError(
      'no_space',
      `snapshot: the sandbox's writable layer holds ${bytes} bytes and ${free} are free where snapshots are kept; at least ${reserveBytes} must stay free (cordon serve --snapshot-reserve). Free disk space or delete snapshots (cordon snapshot rm)`,
      { needed_bytes: bytes, free_bytes: free, reserve_bytes: reserveBytes },
    );
  }
}

/** Copy the layer `from` to the new directory `to` (written as `to.partial`, renamed when complete). */
export async function copyLayer(from: string, to: string): Promise<void> {
  const partial = `${to}.partial`;
  await rm(partial, { recursive: true, force: true });
  try {
    // -a: -d (no dereference, links as links) -R (special files recreated, not read) --preserve=all.
    const r = await run('cp', ['-a', '--one-file-system', '--no-target-directory', '--', from, partial], { timeoutMs: LAYER_COPY_DEADLINE_MS, label: 'copying a sandbox layer' });
    if (r.code !== 0) {
      const msg = sandboxView(r.stderr, from, partial);
      if (/No space left on device|Disk quota exceeded/.test(r.stderr)) {
        throw new CordonError('no_space', `snapshot: the disk filled up while copying the sandbox's writable layer (${msg}); free disk space or delete snapshots`);
      }
      // GNU cp (and tar) name files by their full path, which the kernel refuses past PATH_MAX.
      if (/File name too long/.test(r.stderr)) {
        throw new CordonError('invalid_state', `snapshot: the sandbox holds a directory tree deeper than the host can copy (a path longer than 4096 bytes, ${msg}); remove or flatten it and retry. The sandbox runs on unchanged`);
      }
      throw new Error(`copying the sandbox's writable layer failed: ${msg}`);
    }
    await rename(partial, to);
  } catch (e) {
    await removeLayer(partial).catch(() => {});
    throw e;
  }
}

/** Delete a layer copy (deeper than PATH_MAX perhaps): rm walks it without following links. */
export async function removeLayer(dir: string): Promise<void> {
  await runOk('rm', ['-rf', '--one-file-system', '--', dir], { timeoutMs: LAYER_COPY_DEADLINE_MS });
}

/** cp's first complaint, with host paths turned into the sandbox's own and long paths shortened. */
function sandboxView(stderr: string, from: string, to: string): string {
  const first = stderr.trim().split('\n')[0] ?? '';
  const inSandbox = first.split(from).join('').split(to).join('');
  return inSandbox.replace(/'([^']{120,})'/g, (_m, p: string) => `'${p.slice(0, 60)}…${p.slice(-40)}'`).slice(0, 400);
}
