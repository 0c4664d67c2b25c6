import { spawn, type ChildProcess } from 'node:child_process';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import * as pty from 'node-pty';
import type { ExitStatus } from './types.js';

// The host side of a process started with a runtime's `exec`: plain pipes, or a pseudo-terminal.

export interface SpawnedExec {
  stdin: Writable;
  stdout: Readable;
  stderr?: Readable;
  exited: Promise<ExitStatus>;
  /** Whether the runtime's exec has exited (or never started). */
  readonly done: boolean;
  resize(cols: number, rows: number): void;
  kill(): void;
}

export function spawnPiped(cmd: string, args: string[], ready: Promise<void>): SpawnedExec {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const state = { done: false, child: undefined as ChildProcess | undefined };
  const exited = new Promise<ExitStatus>((resolve) => {
    ready.then(
      () => {
        const child: ChildProcess = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
        state.child = child;
        stdin.pipe(child.stdin!);
        child.stdin!.on('error', () => {});
        child.stdout!.pipe(stdout);
        child.stderr!.pipe(stderr);
        child.on('error', (e) => {
          state.done = true;
          stderr.end(`cordon: ${e.message}\n`);
          resolve({ exitCode: 127 });
        });
        // 'exit', not 'close': a background grandchild may hold the pipes open long after the
        // command itself has finished (the process manager drains what is left for a moment).
        child.on('exit', (code, signal) => {
          state.done = true;
          resolve({ exitCode: code ?? 128 + signalNumber(signal), signal: signal ?? undefined });
        });
      },
      (e: Error) => {
        state.done = true;
        stdout.end();
        stderr.end(`cordon: ${e.message}\n`);
        resolve({ exitCode: 127 });
      },
    );
  });
  return {
    stdin,
    stdout,
    stderr,
    exited,
    get done() {
      return state.done;
    },
    resize: () => {},
    kill: () => state.child?.kill('SIGKILL'),
  };
}

export function spawnTty(cmd: string, args: string[], size: { cols: number; rows: number }, ready: Promise<void>): SpawnedExec {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const state = { done: false, term: undefined as pty.IPty | undefined };
  const exited = new Promise<ExitStatus>((resolve) => {
    ready.then(
      () => {
        const term = pty.spawn(cmd, args, { cols: size.cols, rows: size.rows, name: 'xterm-256color', env: process.env as Record<string, string> });
        state.term = term;
        // Backpressure: stop reading the terminal while nobody takes its output (the program then blocks).
        let held = false;
        term.onData((d) => {
          if (stdout.write(Buffer.from(d, 'binary')) || held) return;
          held = true;
          term.pause();
          stdout.once('drain', () => {
            held = false;
            term.resume();
          });
        });
        stdin.on('data', (d: Buffer) => term.write(d.toString('binary')));
        stdin.on('end', () => term.write('\x04'));
        term.onExit(({ exitCode, signal }) => {
          state.done = true;
          stdout.end();
          resolve({ exitCode: signal ? 128 + signal : exitCode });
        });
      },
      (e: Error) => {
        state.done = true;
        stdout.end(`cordon: ${e.message}\r\n`);
        resolve({ exitCode: 127 });
      },
    );
  });
  return {
    stdin,
    stdout,
    stderr: undefined,
    exited,
    get done() {
      return state.done;
    },
    resize: (cols: number, rows: number) => state.term?.resize(cols, rows),
    kill: () => state.term?.kill('SIGKILL'),
  };
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };
export function signalNumber(sig: string | null | undefined): number {
  return sig ? (SIGNALS[sig] ?? 0) : 0;
}
