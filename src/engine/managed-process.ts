import { OutputFanout, type EventSink, type FlowLimits, type Source, type StreamDrop } from './output-fanout.js';
import type { ProcessHandle, ProcessMeta } from './process-handle.js';

// One process's record and output buffer; the ProcessManager (process-manager.ts) starts and finds them.

export type ProcessEvent =
  | { type: 'start'; pid: number }
  | { type: 'stdout' | 'stderr' | 'pty'; data: Buffer }
  | { type: 'exit'; exitCode: number; signal?: string; timedOut?: boolean; oomKilled?: boolean; error?: string };

export type ProcessSink = EventSink<ProcessEvent>;

/** What a restarted daemon keeps of a process (ProcessMeta), and what only a live one knows. */
export interface ProcessInfo extends ProcessMeta {
  pid: number;
  running: boolean;
  stdinOpen: boolean;
  exitedAt?: number;
  exitCode?: number;
}

/** One running or recently finished process, with the output a late subscriber can replay. */
export class ManagedProcess {
  readonly info: ProcessInfo;
  private chunks: ProcessEvent[] = [];
  private buffered = 0;
  private dropped = false;
  private readonly fanout: OutputFanout<ProcessEvent>;
  exit?: Extract<ProcessEvent, { type: 'exit' }>;
  /** Set when the process's streams were cut because the sandbox went away. */
  aborted?: StreamDrop;
  timedOut = false;

  /** When the process last wrote output (0: never); read by the idle pause. */
  lastOutputAt = 0;

  constructor(info: ProcessInfo, readonly handle: ProcessHandle, private readonly bufferLimit: number, flow: FlowLimits) {
    this.info = info;
    this.fanout = new OutputFanout(flow);
  }

  /** The process's output pipes, paused while a subscriber is congested. */
  setSource(src: Source): void {
    this.fanout.setSource(src);
  }

  record(ev: ProcessEvent): void {
    if (this.aborted) return;
    if (ev.type === 'stdout' || ev.type === 'stderr' || ev.type === 'pty') {
      this.lastOutputAt = Date.now();
      this.chunks.push(ev);
      this.buffered += ev.data.length;
      while (this.buffered > this.bufferLimit && this.chunks.length > 1) {
        const old = this.chunks.shift() as { data: Buffer };
        this.buffered -= old.data.length;
        this.dropped = true;
      }
    } else if (ev.type === 'exit') {
      this.exit = ev;
    }
    this.fanout.deliver(ev);
    if (ev.type === 'exit') this.fanout.finish();
  }

  /** Replay what is buffered, then follow live events until exit. Returns an unsubscribe function. */
  subscribe(sink: ProcessSink, replay = true): () => void {
    if (this.aborted) {
      sink.drop(this.aborted);
      return () => {};
    }
    sink.push({ type: 'start', pid: this.info.pid });
    if (replay) for (const c of this.chunks) sink.push(c);
    if (this.exit) {
      sink.push(this.exit);
      return () => {};
    }
    return this.fanout.add(sink);
  }

  /** Cut every stream without an exit event: the sandbox went away, so no exit status is the command's. */
  abort(why: StreamDrop): void {
    if (this.exit || this.aborted) return;
    this.aborted = why;
    this.info.running = false;
    this.info.stdinOpen = false;
    this.info.exitedAt = Date.now();
    this.fanout.dropAll(why);
  }

  get outputDropped(): boolean {
    return this.dropped;
  }

  /** Whether any client follows the output live (otherwise it only feeds the replay ring). */
  get observed(): boolean {
    return this.fanout.size > 0;
  }

  /** Whether a congested subscriber holds the process's output pipes paused. */
  get outputPaused(): boolean {
    return this.fanout.isPaused;
  }
}
