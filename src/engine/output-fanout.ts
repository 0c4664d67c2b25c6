// Delivery of one process's events to its live subscribers, with flow control: a subscriber whose
// transport holds more than the high-water mark pauses the process at its source (its pipes stop
// being read, the OS pipe fills, the process blocks in write, as `docker attach` does) until that
// transport drains; one that stays stalled past the write deadline is cut off and the source resumes.
// envd does the same with an unbuffered fan-out and a 15 s deadline per send (streamWriteDeadline).

export type DropKind = 'stalled' | 'sandbox_gone' | 'agent_lost';

/** How a stream ends other than with an exit event. */
export interface StreamDrop {
  kind: DropKind;
  message: string;
}

/** One subscriber's transport, as the engine sees it (SSE response, WebSocket, Connect stream, a collector). */
export interface EventSink<E> {
  push(ev: E): void;
  /** Bytes handed to the transport that the client has not taken yet. */
  backlog(): number;
  /** Call `cb` once, when the transport has written out what it holds. */
  onDrain(cb: () => void): void;
  /** End the stream without an exit event; the transport is closed and never pushed to again. */
  drop(why: StreamDrop): void;
}

export interface FlowLimits {
  /** Backlog above which a subscriber counts as congested. */
  highWaterBytes: number;
  /** How long a subscriber may stay congested before it is cut off. */
  writeDeadlineMs: number;
}

/** What can be paused: the process's output pipes. */
export interface Source {
  pause(): void;
  resume(): void;
}

interface Subscriber<E> {
  sink: EventSink<E>;
  congested: boolean;
  /** Fires at the write deadline while congested. */
  timer?: NodeJS.Timeout;
  gone: boolean;
}

export class OutputFanout<E> {
  private readonly subs = new Set<Subscriber<E>>();
  private source?: Source;
  private paused = false;

  constructor(private readonly limits: FlowLimits) {}

  setSource(src: Source): void {
    this.source = src;
    if (this.paused) src.pause();
  }

  get size(): number {
    return this.subs.size;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Follow a sink; returns the function that stops following it. */
  add(sink: EventSink<E>): () => void {
    const sub: Subscriber<E> = { sink, congested: false, gone: false };
    this.subs.add(sub);
    this.watch(sub);
    this.update();
    return () => this.forget(sub);
  }

  /** Deliver an event to every subscriber, then pause or resume the source as they now need. */
  deliver(ev: E): void {
    for (const sub of [...this.subs]) {
      sub.sink.push(ev);
      this.watch(sub);
    }
    this.update();
  }

  /**
   * The last event went out: subscribers leave the fan-out, but a congested one keeps its deadline,
   * so a client that never reads the rest is still cut off instead of holding its backlog forever.
   */
  finish(): void {
    for (const sub of this.subs) {
      sub.gone = true;
      if (!sub.congested) clearTimeout(sub.timer);
    }
    this.subs.clear();
    this.update();
  }

  /** End every stream without delivering anything more (the sandbox went away). */
  dropAll(why: StreamDrop): void {
    const all = [...this.subs];
    this.subs.clear();
    for (const sub of all) {
      this.retire(sub);
      sub.sink.drop(why);
    }
    this.update();
  }

  private watch(sub: Subscriber<E>): void {
    if (sub.congested || sub.gone || sub.sink.backlog() <= this.limits.highWaterBytes) return;
    sub.congested = true;
    sub.timer = setTimeout(() => {
      if (!sub.congested) return;
      const seconds = Math.round(this.limits.writeDeadlineMs / 1000);
      this.forget(sub);
      sub.sink.drop({ kind: 'stalled', message: `the client read nothing for ${seconds}s while ${this.limits.highWaterBytes} bytes waited for it` });
    }, this.limits.writeDeadlineMs);
    sub.timer.unref();
    sub.sink.onDrain(() => {
      if (!sub.congested) return;
      sub.congested = false;
      clearTimeout(sub.timer);
      if (!sub.gone) this.update();
    });
  }

  private forget(sub: Subscriber<E>): void {
    this.retire(sub);
    if (this.subs.delete(sub)) this.update();
  }

  private retire(sub: Subscriber<E>): void {
    sub.gone = true;
    sub.congested = false;
    clearTimeout(sub.timer);
  }

  private update(): void {
    let congested = false;
    for (const s of this.subs) if (s.congested) congested = true;
    if (congested === this.paused) return;
    this.paused = congested;
    if (congested) this.source?.pause();
    else this.source?.resume();
  }
}
