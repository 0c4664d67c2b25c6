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

/** A running directory watch, however it is implemented (inotify through the agent, or polling). */
export interface DirWatch {
  /** Resolves once the changes made before the call have been reported (or after a bound). */
  sync(): Promise<void>;
  /** Resolves when the watch ended (stopped, the directory or the sandbox gone). */
  readonly exited: Promise<unknown>;
  /** Why the watch ended, when it ended by failing (a bound it passed). */
  readonly failure?: CordonError;
  stop(): void;
}

interface Snap {
  inode: string;
  mode: number;
  size: string;
  mtime: string;
  isDir: boolean;
}

const SYNC = '@@cordon-sync ';
/** How long a write through the API waits for watchers to have looked (they are polls, not inotify). */
const SYNC_TIMEOUT_MS = 3000;
/**
 * Bounds of one snapshot (the sandbox decides what is in the tree): past either the watcher ends with
 * an error instead of holding and diffing an unbounded listing every interval.
 */
export const MAX_SNAPSHOT_ENTRIES = 100_000;
export const MAX_SNAPSHOT_BYTES = 16 * 1024 * 1024;

/**
 * Watches a directory inside a sandbox by polling. Busybox has no inotifyd and the sandbox's writes
 * may live only in gVisor's memory overlay, so one helper shell inside the sandbox prints a
 * snapshot (inode, mode, size, mtime, name) every interval and the daemon diffs them.
 *
 * A poll can miss a file that is created and removed between two snapshots. Changes made through the
 * daemon's own file API need not be missed: `sync()` wakes the shell (a line on its stdin) and
 * resolves once a snapshot taken after the change is diffed, so the API call can return only after
 * its events were reported, as they would be with inotify.
 */
export class DirWatcher implements DirWatch {
  private prev?: Map<string, Snap>;
  private stopped = false;
  /** Why the watcher ended on its own (its tree grew past the bounds), if it did. */
  failure?: CordonError;
  private seq = 0;
  /** The kick written to the shell and not yet acknowledged, with the syncs that rode on it. */
  private inFlight?: { n: number; waiters: (() => void)[] };
  /** Syncs that arrived while a kick was in flight; they need a later kick of their own. */
  private queued: (() => void)[] = [];
  /** Syncs whose kick was read by the shell: the snapshot now running started after their change. */
  private started: (() => void)[] = [];

  private constructor(private readonly handle: ExecHandle, private readonly onEvent: (e: WatchEvent) => void) {}

  static async start(exec: HelperExec, dir: string, opts: { recursive: boolean; user?: string; intervalMs?: number }, onEvent: (e: WatchEvent) => void): Promise<DirWatcher> {
    const depth = opts.recursive ? '' : '-maxdepth 1';
    const secs = ((opts.intervalMs ?? 300) / 1000).toFixed(3);
    // `read -t` waits for the interval or a kick. It fails the same way on timeout and on end of
    // input, so /proc/uptime (centiseconds) tells them apart: at EOF (the daemon is gone) it stops.
    const script = [
      'cd -- "$1" || exit 3',
      "up() { IFS='. ' read -r s c _ < /proc/uptime; now=$((s * 100 + 1$c - 100)); }",
      'while :; do',
      `  ${BB} find . -mindepth 1 ${depth} -exec ${BB} stat -c '%i|%f|%s|%y|%n' -- {} + 2>/dev/null`,
      `  echo '${END}'`,
      '  up; t0=$now',
      `  if IFS= read -r -t "$2" k; then echo "${SYNC}$k"; else up; [ $((now - t0)) -ge 5 ] || exit 0; fi`,
      'done',
    ].join('\n');
    const handle = await exec([BB, 'sh', '-c', script, 'watch', dir, secs], opts.user);
    const w = new DirWatcher(handle, onEvent);
    handle.stdin.on('error', () => {});
    await w.follow();
    return w;
  }

  /** Resolves once the first snapshot (the baseline) is in, so later changes are all reported. */
  private follow(): Promise<void> {
    return new Promise((resolve, reject) => {
      let pending = '';
      let lines: string[] = [];
      let bytes = 0;
      let ready = false;
      let stderr = '';
      this.handle.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d).slice(-2000)));
      this.handle.stdout.on('data', (d: Buffer) => {
        if (this.failure) return;
        pending += d.toString('utf8');
        let i: number;
        while ((i = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, i);
          pending = pending.slice(i + 1);
          if (line.startsWith(SYNC)) {
            this.acknowledged(Number(line.slice(SYNC.length)));
            continue;
          }
          if (line !== END) {
            lines.push(line);
            bytes += line.length + 1;
            continue;
          }
          this.snapshot(lines);
          lines = [];
          bytes = 0;
          for (const done of this.started.splice(0)) done();
          if (!ready) (ready = true), resolve();
        }
        if (lines.length > MAX_SNAPSHOT_ENTRIES || bytes + pending.length > MAX_SNAPSHOT_BYTES) {
          this.failure = new CordonError(
            'payload_too_large',
            `the watched directory has too many entries to watch (more than ${MAX_SNAPSHOT_ENTRIES} or ${MAX_SNAPSHOT_BYTES / 1024 / 1024} MiB of names); watch a narrower directory, or not recursively`,
          );
          lines = [];
          pending = '';
          this.stop();
        }
      });
      this.handle.exited.then((st) => {
        for (const done of [...this.started.splice(0), ...this.queued.splice(0), ...(this.inFlight?.waiters ?? [])]) done();
        this.inFlight = undefined;
        if (ready) return;
        if (this.failure) reject(this.failure);
        else if (st.exitCode === 3) reject(errors.fileNotFound('watched directory'));
        else reject(new CordonError('internal', `the directory watcher exited (${st.exitCode}): ${stderr.trim()}`));
      });
    });
  }

  /**
   * Resolves after a snapshot that began after this call has been diffed and its events reported
   * (or after a few seconds, or when the watcher ends).
   */
  sync(): Promise<void> {
    if (this.stopped || this.handle.stdin.writableEnded) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(resolve, SYNC_TIMEOUT_MS);
      t.unref();
      const done = () => (clearTimeout(t), resolve());
      if (this.inFlight) this.queued.push(done);
      else this.kick([done]);
    });
  }

  private kick(waiters: (() => void)[]): void {
    const n = ++this.seq;
    this.inFlight = { n, waiters };
    this.handle.stdin.write(`${n}\n`);
  }

  /** The shell read kick `n`: the snapshot it starts now sees every change made before the kick. */
  private acknowledged(n: number): void {
    if (!this.inFlight || this.inFlight.n !== n) return;
    this.started.push(...this.inFlight.waiters);
    this.inFlight = undefined;
    if (this.queued.length) this.kick(this.queued.splice(0));
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
    // A rename keeps the inode, size and mtime; a removed file's inode reused by a new one does not
    // keep the nanosecond mtime, so that is a remove and a create, as inotify would say.
    const identity = (s: Snap) => `${s.inode}|${s.size}|${s.mtime}`;
    const gone = new Map<string, string>(); // identity → old name, for rename detection
    for (const [name, s] of prev) if (!cur.has(name)) gone.set(identity(s), name);
    const out: WatchEvent[] = [];
    for (const [name, s] of cur) {
      const old = prev.get(name);
      if (!old) {
        const from = gone.get(identity(s));
        if (from !== undefined) {
          gone.delete(identity(s));
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
    this.handle.stdin.end();
    this.handle.signal('SIGKILL').catch(() => {});
  }
}
