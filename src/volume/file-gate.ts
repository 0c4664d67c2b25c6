import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pidAlive, run, sleep } from '../util/proc.js';
import type { FileRule } from './file-rules.js';

// File gates: one cordon-fsgate process (Go, go-fuse) per ruled mount of a sandbox. It serves the mount's
// source through FUSE under GATES/<sandbox>/<key>/mnt, refusing what the rules block (EACCES) and
// reporting operations on a unix socket; the runtime binds that mount point instead of the source.
// Chosen over fanotify (no per-operation deny for create/remove/rename, and none at all inside gVisor,
// whose gofer does the host-side I/O) and over a gVisor-only facility (crun needs the same rules).
// A gate runs in its own session and survives a daemon restart (the daemon reconnects); it dies with
// the sandbox's stop or removal. A dead or hung gate hurts only its sandbox: its mount answers ENOTCONN
// once the connection is aborted, and the daemon never touches the mount point's contents itself.

const READY_DEADLINE_MS = 10_000;
const KILL_WAIT_MS = 2_000;
/** One event line is at most this long (paths are at most 4096 bytes); longer lines are dropped. */
const MAX_LINE = 16 * 1024;
/** Events taken from one gate per second; the gate itself already coalesces and limits to this. */
const DAEMON_RATE = 500;
/**
 * Watchdog: every gate's mount root is stat'ed by a child process with a deadline this often; a gate
 * that does not answer is hung: its connection is aborted and it is killed, so the sandbox's operations
 * fail instead of hanging. CORDON_FSGATE_PROBE_MS changes the period (tests shorten it).
 */
const PROBE_EVERY_MS = Number(process.env.CORDON_FSGATE_PROBE_MS) || 30_000;
const PROBE_DEADLINE_MS = Math.max(2_000, Math.min(10_000, PROBE_EVERY_MS));

/** The gate binary of this build (dist/fsgate/cordon-fsgate), if it was built. */
export function fsgateBinary(): string | undefined {
  const p = fileURLToPath(new URL('../../fsgate/cordon-fsgate', import.meta.url));
  return existsSync(p) ? p : undefined;
}

export interface GateSpec {
  /** The host directory served (a staging bind, an overlay's merged dir, a volume's data dir). */
  source: string;
  /** Where the sandbox sees it: rules and events speak in sandbox paths. */
  prefix: string;
  rules: FileRule[];
  /** Path prefixes (sandbox paths) whose operations are reported. */
  events: string[];
}

export interface FileEvent {
  op: string;
  path?: string;
  action?: 'allow' | 'block';
  count?: number;
  ts: number;
}

export interface GateSink {
  event(sandboxId: string, ev: FileEvent): void;
  /** The gate serving `prefix` ended (or hung and was stopped) without being asked to. */
  exited(sandboxId: string, prefix: string, detail: string): void;
}

interface Live {
  sock?: Socket;
  stopping: boolean;
  prefix: string;
}

async function mountInfo(): Promise<{ dev: string; path: string; fstype: string }[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const f = l.split(' ');
      const dash = f.indexOf('-');
      return { dev: f[2], path: f[4], fstype: f[dash + 1] };
    });
}

export class FileGates {
  private readonly live = new Map<string, Live>();
  private probing?: NodeJS.Timeout;

  constructor(
    private readonly dir: string,
    /** The built cordon-fsgate, or undefined when this build has none (file rules are then refused). */
    readonly binary: string | undefined,
    private readonly sink: GateSink,
  ) {}

  /** Probe every live gate periodically (see PROBE_EVERY_MS); one probe round at a time. */
  private watch(): void {
    if (this.probing) return;
    let busy = false;
    this.probing = setInterval(() => {
      if (busy || !this.live.size) return;
      busy = true;
      void this.probeAll().finally(() => (busy = false));
    }, PROBE_EVERY_MS);
    this.probing.unref();
  }

  private async probeAll(): Promise<void> {
    for (const [k, l] of [...this.live]) {
      if (l.stopping) continue;
      const [id, key] = k.split('/');
      const r = await run('stat', ['-c', '%i', this.paths(id, key).mnt], { timeoutMs: PROBE_DEADLINE_MS }).catch((e: Error) => e);
      if (!(r instanceof Error) || l.stopping || this.live.get(k) !== l) continue;
      if ((r as { code?: string }).code !== 'deadline_exceeded') continue; // an error answer is an answer: only silence is a hang
      l.stopping = true;
      await this.stopOne(id, key, false).catch(() => {});
      this.sink.exited(id, l.prefix, `it did not answer within ${PROBE_DEADLINE_MS / 1000}s and was stopped`);
    }
  }

  get available(): boolean {
    return !!this.binary && existsSync(this.binary);
  }

  private paths(id: string, key: string) {
    const base = join(this.dir, id, key);
    // Unix socket paths are limited to 108 bytes: a short name under /run, unique per gate directory.
    const sock = join('/run/cordon-fsgate', `${createHash('sha256').update(base).digest('hex').slice(0, 20)}.sock`);
    return { base, mnt: join(base, 'mnt'), config: join(base, 'config.json'), pid: join(base, 'pid'), log: join(base, 'log'), sock };
  }

  /** Sandboxes with gate state on disk (the supervisor removes those without a record). */
  async ids(): Promise<string[]> {
    return readdir(this.dir).catch(() => [] as string[]);
  }

  /** Start (or keep) the gate of mount `key`; returns the directory the runtime binds. */
  async start(id: string, key: string, spec: GateSpec): Promise<string> {
    if (!this.available) throw new Error('file rules need cordon-fsgate, which this build lacks; install golang-github-hanwen-go-fuse-dev and fuse3 (scripts/setup-host.sh) and run npm run build');
    const p = this.paths(id, key);
    if ((await this.pidOf(id, key)) && (await this.mounted(p.mnt))) {
      this.connect(id, key, spec.prefix);
      return p.mnt;
    }
    await this.stopOne(id, key, false);
    await mkdir(p.mnt, { recursive: true, mode: 0o700 });
    await mkdir('/run/cordon-fsgate', { recursive: true, mode: 0o700 });
    const config = { source: spec.source, mount: p.mnt, prefix: spec.prefix, socket: p.sock, rules: spec.rules, events: spec.events, rate: 200, burst: 1000 };
    await writeFile(p.config, JSON.stringify(config), { mode: 0o600 });
    const log = openSync(p.log, 'w', 0o600);
    const child = spawn(this.binary!, [p.config], { detached: true, stdio: ['ignore', 'pipe', log] });
    closeSync(log);
    try {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => reject(new Error(`cordon-fsgate for ${spec.prefix} was not ready within ${READY_DEADLINE_MS / 1000}s`)), READY_DEADLINE_MS);
        child.stdout!.on('data', (b: Buffer) => {
          out += b.toString();
          if (out.includes('ready\n')) (clearTimeout(timer), resolve());
        });
        child.on('exit', (code) => (clearTimeout(timer), reject(new Error(`cordon-fsgate for ${spec.prefix} exited (${code})`))));
        child.on('error', (e) => (clearTimeout(timer), reject(e)));
      });
    } catch (e) {
      if (child.pid) process.kill(child.pid, 'SIGKILL');
      const tail = (await readFile(p.log, 'utf8').catch(() => '')).trim().slice(-500);
      await this.stopOne(id, key, false);
      throw new Error(`${(e as Error).message}${tail ? `: ${tail}` : ''}`);
    }
    child.stdout!.destroy();
    child.unref();
    await writeFile(p.pid, `${child.pid}\n`);
    this.connect(id, key, spec.prefix);
    return p.mnt;
  }

  /** After a daemon restart: reconnect to the gates of a sandbox that kept running. */
  async adopt(id: string): Promise<void> {
    for (const key of await readdir(join(this.dir, id)).catch(() => [] as string[])) {
      const cfg = JSON.parse(await readFile(this.paths(id, key).config, 'utf8').catch(() => '{}')) as { prefix?: string };
      if (!cfg.prefix) continue;
      if (await this.pidOf(id, key)) this.connect(id, key, cfg.prefix);
      else this.sink.exited(id, cfg.prefix, 'it was gone after the daemon restarted');
    }
  }

  /** Stop every gate of the sandbox (stop, removal) and delete their state. */
  async stop(id: string): Promise<void> {
    for (const key of await readdir(join(this.dir, id)).catch(() => [] as string[])) await this.stopOne(id, key, true);
    await rmdir(join(this.dir, id)).catch(() => {});
  }

  /** The gate's pid when it is still that gate (a pid reused by another program does not count). */
  private async pidOf(id: string, key: string): Promise<number | undefined> {
    const p = this.paths(id, key);
    const pid = Number((await readFile(p.pid, 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(pid) || pid <= 1 || !pidAlive(pid)) return undefined;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    return cmd.split('\0').includes(p.config) ? pid : undefined;
  }

  private async mounted(path: string): Promise<boolean> {
    return (await mountInfo()).some((m) => m.path === path);
  }

  /**
   * Abort the FUSE connection (requests in flight fail at once, even from a hung gate), kill the gate,
   * and detach the mount. Never reads below the mount point: a hung gate would hang the reader.
   */
  private async stopOne(id: string, key: string, removeState: boolean): Promise<void> {
    const p = this.paths(id, key);
    const k = `${id}/${key}`;
    const l = this.live.get(k);
    if (l) {
      l.stopping = true;
      l.sock?.destroy();
      this.live.delete(k);
    }
    const mounts = (await mountInfo()).filter((m) => m.path === p.mnt || m.path.startsWith(p.mnt + sep));
    for (const m of mounts) if (m.fstype.startsWith('fuse')) await this.abort(m.dev);
    const pid = await this.pidOf(id, key);
    if (pid) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      for (let t = 0; t < KILL_WAIT_MS && pidAlive(pid); t += 20) await sleep(20);
    }
    for (const m of mounts.reverse()) await run('umount', ['-l', m.path], { timeoutMs: 10_000 });
    await rm(p.sock, { force: true });
    if (!removeState) return;
    if (await this.mounted(p.mnt)) throw new Error(`the file gate of sandbox ${id} is still mounted at ${p.mnt}; not deleting its state`);
    for (const f of [p.config, p.pid, p.log]) await rm(f, { force: true });
    await rmdir(p.mnt).catch(() => {});
    await rmdir(p.base).catch(() => {});
  }

  /** Write to /sys/fs/fuse/connections/<minor>/abort (mounting fusectl first if needed). */
  private async abort(dev: string): Promise<void> {
    const minor = dev.split(':')[1];
    const ctl = '/sys/fs/fuse/connections';
    if (!(await mountInfo()).some((m) => m.path === ctl)) await run('mount', ['-t', 'fusectl', 'fusectl', ctl], { timeoutMs: 5_000 });
    await writeFile(join(ctl, minor, 'abort'), '1').catch(() => {});
  }

  /** Read the gate's events; the socket closing while not stopping means the gate ended. */
  private connect(id: string, key: string, prefix: string): void {
    const k = `${id}/${key}`;
    if (this.live.get(k)?.sock) return;
    const state: Live = { stopping: false, prefix };
    this.live.set(k, state);
    this.watch();
    const sock = connect(this.paths(id, key).sock);
    state.sock = sock;
    let buf = '';
    let windowStart = Date.now();
    let taken = 0;
    let dropped = 0;
    const take = (line: string) => {
      let ev: FileEvent;
      try {
        ev = JSON.parse(line) as FileEvent;
      } catch {
        return;
      }
      if (typeof ev.op !== 'string' || ev.op.length > 16) return;
      const now = Date.now();
      if (now - windowStart >= 1000) {
        if (dropped) this.sink.event(id, { op: 'dropped', count: dropped, ts: now });
        windowStart = now;
        taken = 0;
        dropped = 0;
      }
      if (++taken > DAEMON_RATE && ev.op !== 'dropped') {
        dropped += ev.count ?? 1;
        return;
      }
      this.sink.event(id, { op: ev.op, path: typeof ev.path === 'string' ? ev.path.slice(0, 4096) : undefined, action: ev.action === 'block' ? 'block' : ev.action === 'allow' ? 'allow' : undefined, count: Number.isInteger(ev.count) ? ev.count : 1, ts: Number.isFinite(ev.ts) ? ev.ts : now });
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        take(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      if (buf.length > MAX_LINE) buf = '';
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      if (state.stopping || this.live.get(k) !== state) return;
      state.sock = undefined;
      void this.pidOf(id, key).then((pid) => {
        if (state.stopping) return;
        if (!pid) this.sink.exited(id, prefix, 'it exited');
        else setTimeout(() => this.live.get(k) === state && !state.stopping && (this.live.delete(k), this.connect(id, key, prefix)), 1000).unref();
      });
    });
  }
}
