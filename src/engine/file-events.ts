import type { SandboxStore } from '../store/sandboxes.js';
import type { FileEvent, GateSink } from '../volume/file-gate.js';

/**
 * File gates report into the sandbox's event log as `file` events (batched writes: they can be many).
 * The gates already fold repeats and limit the rate; what they drop arrives as one `dropped` event.
 */
export function fileEventSink(store: SandboxStore): GateSink {
  return {
    event(id: string, e: FileEvent) {
      if (!store.get(id)) return;
      const times = e.count && e.count > 1 ? ` (x${e.count})` : '';
      const message = e.op === 'dropped' ? `${e.count ?? 0} file events dropped (rate limit)` : `${e.op} ${e.path ?? ''} ${e.action === 'block' ? 'blocked' : 'allowed'}${times}`;
      store.queueEvent(id, 'file', message, { ...e });
    },
    exited(id: string, prefix: string, detail: string) {
      if (!store.get(id)) return;
      store.addEvent(id, 'file', `the file gate serving ${prefix} ended (${detail}); file operations under ${prefix} fail until the sandbox is stopped and started again`, { op: 'gate-exited', path: prefix });
    },
  };
}
