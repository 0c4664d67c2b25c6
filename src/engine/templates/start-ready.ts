import { CordonError } from '../../errors/registry.js';
import type { LiveSandbox } from '../live-sandbox.js';
import type { ProcessEvent } from '../process-manager.js';
import type { TemplateStart } from '../types.js';

const TAIL_BYTES = 2048;
const READY_POLL_MS = 200;
/** One run of the ready command may take this long. */
const READY_RUN_MS = 10_000;
export const DEFAULT_READY_TIMEOUT_MS = 120_000;

/**
 * A template's start command, in the background (tag "start"), then its ready command again and again
 * until it exits 0: what a sandbox of the template runs before create returns, and what a build checks
 * once before it keeps the template. Fails with the last output of both at the deadline, or when the
 * start command ends with an error first.
 */
export async function startAndWaitReady(live: LiveSandbox, start: TemplateStart, onOutput?: (stream: 'stdout' | 'stderr', data: string) => void): Promise<void> {
  const proc = await live.start({ cmd: ['/bin/sh', '-c', start.cmd], tag: 'start' });
  let startTail = '';
  let ended: Extract<ProcessEvent, { type: 'exit' }> | undefined;
  proc.subscribe({
    push: (ev) => {
      if (ev.type === 'stdout' || ev.type === 'stderr' || ev.type === 'pty') {
        const data = ev.data.toString('utf8');
        startTail = (startTail + data).slice(-TAIL_BYTES);
        onOutput?.(ev.type === 'stderr' ? 'stderr' : 'stdout', data);
      } else if (ev.type === 'exit') ended = ev;
    },
    backlog: () => 0,
    onDrain: (cb) => cb(),
    drop: () => {},
  });
  if (!start.ready) return;
  const deadline = Date.now() + (start.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS);
  let readyTail = '';
  for (;;) {
    const r = await live.exec({ cmd: ['/bin/sh', '-c', start.ready], timeoutMs: Math.min(READY_RUN_MS, Math.max(1000, deadline - Date.now())) });
    if (r.exitCode === 0) return;
    readyTail = `${r.stdout}${r.stderr}`.slice(-TAIL_BYTES) || `(exit code ${r.exitCode}, no output)`;
    const startFailed = ended && ended.exitCode !== 0;
    if (startFailed || Date.now() >= deadline) {
      const why = startFailed ? `the start command exited with code ${ended!.exitCode} before the ready command passed` : `the ready command did not pass within ${Math.round((start.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS) / 1000)}s`;
      throw new CordonError('invalid_state', `${why}; last output of the start command:\n${startTail.trim() || '(none)'}\nlast output of the ready command:\n${readyTail.trim()}`, {
        start_output: startTail,
        ready_output: readyTail,
      });
    }
    await new Promise((res) => setTimeout(res, READY_POLL_MS));
  }
}
