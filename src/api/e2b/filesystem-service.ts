// envd's filesystem.Filesystem service (spec/envd/filesystem/filesystem.proto) over FileService.
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { DirWatch, WatchEvent } from '../../engine/dir-watcher.js';
import type { LiveSandbox } from '../../engine/live-sandbox.js';
import { CordonError } from '../../errors/registry.js';
import { RpcError, type Json, type MethodDef, type RpcContext } from './connect.js';
import { entryInfo, envdPath, parseMsg, resolveEnvdUser, userFromAuthorization, type FileMetadata } from './envd-context.js';

const path = z.string().min(1).max(4096);
const watchReq = z.object({
  path,
  recursive: z.boolean().optional(),
  includeEntry: z.boolean().optional(),
  allowNetworkMounts: z.boolean().optional(),
});

const EVENT_TYPE = { create: 'EVENT_TYPE_CREATE', write: 'EVENT_TYPE_WRITE', remove: 'EVENT_TYPE_REMOVE', rename: 'EVENT_TYPE_RENAME', chmod: 'EVENT_TYPE_CHMOD' } as const;

/** Watchers made with CreateWatcher, polled with GetWatcherEvents; bounded so a forgotten one cannot grow without end. */
interface PolledWatcher {
  sandboxId: string;
  watcher: DirWatch;
  events: Json[];
}
const MAX_WATCHERS_PER_SANDBOX = 64;
const MAX_BUFFERED_EVENTS = 10_000;

/** Is `path` the watched directory, inside it, or one of its parents? */
const touches = (dir: string, path: string) => path === dir || path.startsWith(dir === '/' ? '/' : `${dir}/`) || dir.startsWith(`${path}/`);

export class WatcherRegistry {
  private readonly polled = new Map<string, PolledWatcher>();
  /** Every running watcher (streamed or polled), so changes made through envd can wait for them. */
  private readonly active = new Set<{ sandboxId: string; dir: string; watcher: DirWatch }>();

  add(w: PolledWatcher): string {
    if ([...this.polled.values()].filter((x) => x.sandboxId === w.sandboxId).length >= MAX_WATCHERS_PER_SANDBOX) {
      w.watcher.stop();
      throw new RpcError('resource_exhausted', `at most ${MAX_WATCHERS_PER_SANDBOX} watchers per sandbox; remove some with RemoveWatcher`);
    }
    const id = randomUUID();
    this.polled.set(id, w);
    void w.watcher.exited.then(() => this.polled.get(id) === w && setTimeout(() => this.polled.delete(id), 60_000).unref());
    return id;
  }
  get(id: string, sandboxId: string): PolledWatcher {
    const w = this.polled.get(id);
    if (!w || w.sandboxId !== sandboxId) throw new RpcError('not_found', `watcher ${id} does not exist in this sandbox; create one with CreateWatcher`);
    return w;
  }
  remove(id: string, sandboxId: string): void {
    this.get(id, sandboxId).watcher.stop();
    this.polled.delete(id);
  }

  /** Count a running watcher until it ends. */
  track(sandboxId: string, dir: string, watcher: DirWatch): void {
    const entry = { sandboxId, dir, watcher };
    this.active.add(entry);
    void watcher.exited.then(() => this.active.delete(entry));
  }

  /** Resolves once every watcher that can see one of these paths has taken a snapshot after the change. */
  async settle(sandboxId: string, paths: string[]): Promise<void> {
    const ws = [...this.active].filter((a) => a.sandboxId === sandboxId && paths.some((p) => touches(a.dir, p)));
    await Promise.all(ws.map((a) => a.watcher.sync()));
  }
}

export function filesystemService(sandboxId: string, live: () => LiveSandbox, meta: FileMetadata, watchers: WatcherRegistry): Record<string, MethodDef> {
  const ctxUser = async (ctx: RpcContext) => resolveEnvdUser(live(), userFromAuthorization(ctx.headers));
  const info = async (p: string, user: string) => {
    const e = await live().files.stat(p, user);
    return entryInfo(e, meta.get(sandboxId, e.path));
  };

  /** Start a watcher after checking the path is a directory the user can see. */
  const startWatcher = async (msg: Json, ctx: RpcContext, what: string, onEvent: (e: Json) => void) => {
    const req = parseMsg(watchReq, msg, what);
    const user = await ctxUser(ctx);
    const dir = envdPath(req.path, user.home);
    const st = await live().files.stat(dir, user.name);
    if (st.type !== 'dir') throw new RpcError('invalid_argument', `path ${dir} is not a directory`);
    const toWire = async (e: WatchEvent): Promise<Json> => {
      const base: Json = { name: e.name, type: EVENT_TYPE[e.type] };
      if (!req.includeEntry || e.type === 'remove' || e.type === 'rename') return base;
      const entry = await info(`${dir === '/' ? '' : dir}/${e.name}`, user.name).catch(() => undefined);
      return entry ? { ...base, entry } : base;
    };
    // Keep event order even when entries are looked up.
    let chain = Promise.resolve();
    const watcher = await live().watch(dir, { recursive: !!req.recursive, user: user.name }, (e) => {
      chain = chain.then(async () => onEvent(await toWire(e)));
    });
    watchers.track(sandboxId, dir, watcher);
    return watcher;
  };

  return {
    Stat: {
      kind: 'unary',
      async handle(msg, ctx) {
        const req = parseMsg(z.object({ path }), msg, 'StatRequest');
        const user = await ctxUser(ctx);
        return { entry: await info(envdPath(req.path, user.home), user.name) };
      },
    },
    MakeDir: {
      kind: 'unary',
      async handle(msg, ctx) {
        const req = parseMsg(z.object({ path }), msg, 'MakeDirRequest');
        const user = await ctxUser(ctx);
        const p = envdPath(req.path, user.home);
        const existing = await live().files.stat(p, user.name, true).catch((e: unknown) => {
          if (e instanceof CordonError && e.code === 'not_found') return undefined;
          throw e;
        });
        if (existing?.type === 'dir') throw new RpcError('already_exists', `directory already exists: ${p}`);
        if (existing) throw new RpcError('invalid_argument', `path already exists but it is not a directory: ${p}`);
        // As envd: parents the user may not create (e.g. at the top level) are made and handed to the user.
        const e = await live().files.mkdir(p, user.name, { ownParents: true });
        await watchers.settle(sandboxId, [p]);
        return { entry: entryInfo(e) };
      },
    },
    Move: {
      kind: 'unary',
      async handle(msg, ctx) {
        const req = parseMsg(z.object({ source: path, destination: path }), msg, 'MoveRequest');
        const user = await ctxUser(ctx);
        const from = envdPath(req.source, user.home, 'source');
        const to = envdPath(req.destination, user.home, 'destination');
        const e = await live().files.move(from, to, user.name);
        meta.rebase(sandboxId, from, to);
        await watchers.settle(sandboxId, [from, to]);
        return { entry: entryInfo(e, meta.get(sandboxId, to)) };
      },
    },
    ListDir: {
      kind: 'unary',
      async handle(msg, ctx) {
        const req = parseMsg(z.object({ path, depth: z.number().int().min(0).max(64).optional() }), msg, 'ListDirRequest');
        const user = await ctxUser(ctx);
        const entries = await live().files.list(envdPath(req.path, user.home), Math.max(1, req.depth ?? 1), user.name);
        return { entries: entries.map((e) => entryInfo(e, meta.get(sandboxId, e.path))) };
      },
    },
    Remove: {
      kind: 'unary',
      async handle(msg, ctx) {
        const req = parseMsg(z.object({ path }), msg, 'RemoveRequest');
        const user = await ctxUser(ctx);
        const p = envdPath(req.path, user.home);
        // envd removes with os.RemoveAll: a path that does not exist is not an error.
        await live().files.remove(p, user.name, true, true);
        meta.rebase(sandboxId, p, undefined);
        await watchers.settle(sandboxId, [p]);
        return {};
      },
    },
    WatchDir: {
      kind: 'server_stream',
      keepalive: { keepalive: {} },
      async handle(msg, ctx, send) {
        const watcher = await startWatcher(msg, ctx, 'WatchDirRequest', (filesystem) => send({ filesystem }));
        try {
          send({ start: {} });
          await new Promise<void>((resolve, reject) => {
            ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason), { once: true });
            void watcher.exited.then(() => reject(watcher.failure ?? new CordonError('unavailable', 'the sandbox stopped while the directory was watched')));
          });
        } finally {
          watcher.stop();
        }
      },
    },
    CreateWatcher: {
      kind: 'unary',
      async handle(msg, ctx) {
        const events: Json[] = [];
        const watcher = await startWatcher(msg, ctx, 'CreateWatcherRequest', (e) => {
          if (events.length < MAX_BUFFERED_EVENTS) events.push(e);
        });
        return { watcherId: watchers.add({ sandboxId, watcher, events }) };
      },
    },
    GetWatcherEvents: {
      kind: 'unary',
      async handle(msg) {
        const req = parseMsg(z.object({ watcherId: z.string().min(1).max(64) }), msg, 'GetWatcherEventsRequest');
        const w = watchers.get(req.watcherId, sandboxId);
        return { events: w.events.splice(0, w.events.length) };
      },
    },
    RemoveWatcher: {
      kind: 'unary',
      async handle(msg) {
        const req = parseMsg(z.object({ watcherId: z.string().min(1).max(64) }), msg, 'RemoveWatcherRequest');
        watchers.remove(req.watcherId, sandboxId);
        return {};
      },
    },
  };
}
