import { connect } from 'node:net';
import { join } from 'node:path';

/** The sentry answers a pause or resume in milliseconds; a sentry silent this long is not answering. */
const CALL_DEADLINE_MS = 10_000;
/** Its answer is a few dozen bytes of JSON; anything longer is not an answer. */
const MAX_REPLY_BYTES = 64 * 1024;
/** Longest path a Unix socket address holds (sun_path, with its NUL). */
const MAX_SOCKET_PATH = 107;

/** The call could not be made at all (no socket, nobody listening): nothing reached the sentry. */
export class SentryUnreachable extends Error {}

/**
 * One call to a runsc sandbox's control server (gVisor's urpc: a JSON request on the Unix socket
 * `runsc-<id>.sock` in runsc's state root, one JSON answer back). Used where a `runsc` process start
 * (100-300 ms on a loaded host) would be most of the work: freezing the sentry before a checkpoint.
 * The socket lives in the daemon's own state root, never in a directory the sandbox can reach.
 * Rejects with SentryUnreachable when nothing was sent (the caller may fall back to the CLI), with a
 * plain Error when the sentry refused or did not answer in time.
 */
export function sentryCall(stateRoot: string, id: string, method: 'containerManager.Pause' | 'containerManager.Resume'): Promise<void> {
  const path = join(stateRoot, `runsc-${id}.sock`);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) return Promise.reject(new SentryUnreachable(`control socket path too long: ${path}`));
  return new Promise((resolve, reject) => {
    let sent = false;
    let reply = '';
    const sock = connect(path);
    const done = (err?: Error) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`runsc ${method} of ${id}: no answer from the sandbox within ${CALL_DEADLINE_MS / 1000}s`)), CALL_DEADLINE_MS);
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      sent = true;
      sock.write(JSON.stringify({ method, arg: null }));
    });
    sock.on('data', (chunk: string) => {
      reply += chunk;
      if (reply.length > MAX_REPLY_BYTES) return done(new Error(`runsc ${method} of ${id}: answer longer than ${MAX_REPLY_BYTES} bytes`));
      let r: { success?: unknown; err?: unknown };
      try {
        r = JSON.parse(reply);
      } catch {
        return; // not complete yet
      }
      if (r.success === true) done();
      else done(new Error(`runsc ${method} of ${id} refused: ${String(r.err ?? 'no reason given').slice(0, 500)}`));
    });
    sock.on('error', (e) => done(sent ? new Error(`runsc ${method} of ${id}: ${e.message}`) : new SentryUnreachable(e.message)));
    sock.on('close', () => done(new Error(`runsc ${method} of ${id}: the sandbox closed the connection without an answer`)));
  });
}
