import type { Sandbox } from '../../sdk/client.js';
import type { ProcessSocket } from '../../sdk/process-stream.js';
import type { ProcessEvent } from '../../sdk/types.js';

export interface IoOptions {
  interactive: boolean;
  tty: boolean;
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  timeout?: string;
  tag?: string;
}

/**
 * Run a command in a sandbox wired to this terminal: output as it happens, stdin with -i, a PTY
 * (raw mode, window size) with -t. Resolves with the command's exit code.
 */
export async function runAttached(sbx: Sandbox, cmd: string[], o: IoOptions): Promise<number> {
  const stdin = process.stdin;
  const useTty = o.tty && !!process.stdout.isTTY;
  // Backpressure to the daemon: while our stdout (a pipe, a slow terminal) is full, stop reading the socket.
  let sock: ProcessSocket | undefined;
  let paused = false;
  const onEvent = (ev: ProcessEvent) => {
    if (ev.type !== 'stdout' && ev.type !== 'stderr' && ev.type !== 'pty') return;
    const out = ev.type === 'stderr' ? process.stderr : process.stdout;
    if (out.write(ev.data) || paused) return;
    paused = true;
    sock?.pause();
    out.once('drain', () => {
      paused = false;
      sock?.resume();
    });
  };
  const pty = o.tty ? { cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 } : undefined;
  const { socket, done } = await sbx.openProcess(cmd, { env: o.env, cwd: o.cwd, user: o.user, timeout: o.timeout, tag: o.tag, stdin: o.interactive, pty }, onEvent);
  sock = socket;
  if (paused) socket.pause();
  const cleanups: (() => void)[] = [];
  if (o.interactive) {
    if (useTty && stdin.isTTY) {
      stdin.setRawMode(true);
      cleanups.push(() => stdin.setRawMode(false));
    }
    const onData = (d: Buffer) => socket.write(d);
    const onEnd = () => socket.closeStdin();
    stdin.on('data', onData);
    stdin.on('end', onEnd);
    cleanups.push(() => {
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.pause();
    });
  }
  if (useTty) {
    const onResize = () => socket.resize(process.stdout.columns, process.stdout.rows);
    process.stdout.on('resize', onResize);
    cleanups.push(() => process.stdout.off('resize', onResize));
  }
  const forward = (sig: NodeJS.Signals) => () => socket.signal(sig);
  const sigs: NodeJS.Signals[] = useTty ? [] : ['SIGINT', 'SIGTERM'];
  const handlers = sigs.map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  cleanups.push(() => handlers.forEach(([s, h]) => process.off(s, h)));
  try {
    const exit = await done;
    if (exit.timed_out) process.stderr.write('cordon: command timed out\n');
    if (exit.oom_killed) process.stderr.write('cordon: command was killed for exceeding the memory limit\n');
    return exit.exit_code;
  } finally {
    cleanups.forEach((c) => c());
  }
}
