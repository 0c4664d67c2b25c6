import type { ServerResponse } from 'node:http';
import type { FlowLimits } from '../../engine/output-fanout.js';
import type { SandboxEvent } from '../../engine/types.js';
import type { SandboxStore } from '../../store/sandboxes.js';
import { responseFlow } from '../stream-flow.js';
import { eventView } from '../views.js';

const BATCH = 500;

/**
 * A sandbox's events as Server-Sent Events. Events cannot wait at their source, but they are all in
 * the store: while the client is behind (more than the high-water mark unread), live events are not
 * written; once it drains, the stream reads them back from the store from where it stopped. A client
 * that stays behind past the write deadline is cut off.
 */
export function followEvents(res: ServerResponse, store: SandboxStore, id: string, q: { after?: number; type?: string }, flow: FlowLimits): void {
  const transport = responseFlow(res);
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
  res.flushHeaders(); // the client knows the stream is open before the first event
  let last = q.after ?? 0;
  /** Set while events are read from the store instead of the live feed: the last seq taken from it. */
  let from: number | undefined = q.after;
  let stall: NodeJS.Timeout | undefined;

  const write = (text: string) => {
    res.write(text);
    if (stall || transport.backlog() <= flow.highWaterBytes) return;
    stall = setTimeout(() => res.destroy(), flow.writeDeadlineMs);
    transport.onDrain(() => {
      clearTimeout(stall);
      stall = undefined;
      catchUp();
    });
  };
  const emit = (e: SandboxEvent) => {
    last = e.seq;
    if (!q.type || e.type === q.type) write(`id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(eventView(e))}\n\n`);
  };
  const catchUp = () => {
    while (from !== undefined && !stall && !res.destroyed) {
      const batch = store.events(id, from, BATCH);
      for (const e of batch) {
        from = e.seq;
        emit(e);
        if (stall) break;
      }
      if (batch.length < BATCH && !stall) from = undefined;
    }
  };
  const live = (e: SandboxEvent) => {
    if (e.sandboxId !== id || e.seq <= last) return;
    if (stall || from !== undefined) {
      from ??= e.seq - 1;
      return;
    }
    emit(e);
  };
  catchUp();
  store.feed.on('event', live);
  const beat = setInterval(() => stall || res.write(': keep-alive\n\n'), 15_000);
  res.on('close', () => {
    clearInterval(beat);
    clearTimeout(stall);
    store.feed.off('event', live);
  });
}
