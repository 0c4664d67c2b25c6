import { HELPER_DIR } from '../runtime/oci-spec.js';
import type { ExecHandle } from '../runtime/types.js';
import { CordonError, errors } from '../errors/registry.js';
import type { HelperExec } from './files.js';

const BB = `${HELPER_DIR}/busybox`;
const END = '@@cordon-snapshot-end';

export type WatchEventType = 'create' | 'write' | 'remove' | 'rename' | 'chmod';

export interface WatchEvent {
  /** Path relative to the watched directory ("a.txt", "sub/b.txt"). */
  name: string;
  type: WatchEventType;
  isDir: boolean;
}

interface Snap {
  inode: string;
  mode: number;
  size: string;
  mtime: string;
  isDir: boolean;
}

/**
 * Watches a directory inside a sandbox by polling. Busybox has no inotifyd and the sandbox's writes
 * may live only in gVisor's memory overlay, so one helper shell inside the sandbox prints a
 * snapshot (inode, mode, size, mtime, name) every interval and the daemon diffs them.
 */
export class DirWatcher {
  private prev?: Map<string, Snap>;
  private stopped = false;

  private constructor(private readonly handle: ExecHandle, private readonly onEvent: (e: WatchEvent) => void) {}

  static async start(exec: HelperExec, dir: string, opts: { recursive: boolean; user?: string; intervalMs?: number }, onEvent: (e: WatchEvent) => void): Promise<DirWatcher> {
    const depth = opts.recursive ? '' : '-maxdepth 1';
    const secs = ((opts.intervalMs ?? 300) / 1000).toFixed(3);
    const script = [
      'cd -- "$1" || exit 3',
      'while :; do',
      `  ${BB} find . -mindepth 1 ${depth} -exec ${BB} stat -c '%i|%f|%s|%y|%n' -- {} + 2>/dev/null`,
      `  echo '${END}'`,
      `  ${BB} sleep "$2"`,
      'done',
    ].join('\n');
    const handle = await exec([BB, 'sh', '-c', script, 'watch', dir, secs], opts.user);
    handle.stdin.end();
    const w = new DirWatcher(handle, onEvent);
    await w.follow();
    return w;
  }

  /** Resolves once the first snapshot (the baseline) is in, so later changes are all reported. */
  private follow(): Promise<void> {
    return new Promise((resolve, reject) => {
      let pending = '';
      let lines: string[] = [];
      let ready = false;
      let stderr = '';
      this.handle.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d).slice(-2000)));
      this.handle.stdout.on('data', (d: Buffer) => {
        pending += d.toString('utf8');
        let i: number;
        while ((i = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, i);
          pending = pending.slice(i + 1);
          if (line !== END) {
            lines.push(line);
            continue;
          }
          this.snapshot(lines);
          lines = [];
          if (!ready) (ready = true), resolve();
        }
      });
      this.handle.exited.then((st) => {
        if (ready) return;
        if (st.exitCode === 3) reject(errors.fileNotFound('watched directory'));
        else reject(new CordonError('internal', `the directory watcher exited (${st.exitCode}): ${stderr.trim()}`));
      });
    });
  }

  private snapshot(lines: string[]): void {
    const cur = new Map<string, Snap>();
    for (const line of lines) {
      const parts = line.split('|');
      if (parts.length < 5) continue;
      const [inode, hexMode, size, mtime] = parts;
      const name = parts.slice(4).join('|').replace(/^\.\//, '');
      const mode = parseInt(hexMode, 16);
      cur.set(name, { inode, mode, size, mtime, isDir: (mode & 0o170000) === 0o040000 });
    }
    const prev = this.prev;
    this.prev = cur;
    if (!prev || this.stopped) return;
    const gone = new Map<string, string>(); // inode → old name, for rename detection
    for (const [name, s] of prev) if (!cur.has(name)) gone.set(s.inode, name);
    const out: WatchEvent[] = [];
    for (const [name, s] of cur) {
      const old = prev.get(name);
      if (!old) {
        const from = gone.get(s.inode);
        if (from !== undefined) {
          gone.delete(s.inode);
          out.push({ name: from, type: 'rename', isDir: s.isDir });
        }
        out.push({ name, type: 'create', isDir: s.isDir });
        // inotify reports a write after a create when content arrives; mirror it for new files.
        if (!s.isDir && from === undefined && s.size !== '0') out.push({ name, type: 'write', isDir: false });
        continue;
      }
      if (!s.isDir && (old.size !== s.size || old.mtime !== s.mtime || old.inode !== s.inode)) out.push({ name, type: 'write', isDir: false });
      if ((old.mode & 0o7777) !== (s.mode & 0o7777)) out.push({ name, type: 'chmod', isDir: s.isDir });
    }
    for (const name of gone.values()) out.push({ name, type: 'remove', isDir: prev.get(name)!.isDir });
    for (const e of out) this.onEvent(e);
  }

  /** Resolves when the helper is gone (the sandbox dying ends it too). */
  get exited(): Promise<unknown> {
    return this.handle.exited;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.handle.signal('SIGKILL').catch(() => {});
  }
}
