import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CordonError } from '../errors/registry.js';

// S3 credentials registered with the daemon by name. A sync spec names them; the secret stays in
// the data directory (0600), is handed only to the daemon's S3 client and to s3fs through a 0600
// passwd file, and never goes back out through the API, the logs or into a sandbox.

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export const CREDENTIALS_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Printable ASCII without spaces or ':' (s3fs's passwd file separates fields with ':'). */
const KEY_TEXT = /^[\x21-\x39\x3b-\x7e]{1,1024}$/;

export function checkCredentials(c: S3Credentials): S3Credentials {
  if (!KEY_TEXT.test(c.accessKeyId ?? '')) throw new CordonError('invalid_argument', 'access_key_id: 1-1024 printable characters without spaces or ":"', { field: 'access_key_id' });
  if (!KEY_TEXT.test(c.secretAccessKey ?? '')) throw new CordonError('invalid_argument', 'secret_access_key: 1-1024 printable characters without spaces or ":"', { field: 'secret_access_key' });
  if (c.sessionToken !== undefined && !/^[\x21-\x7e]{1,8192}$/.test(c.sessionToken)) throw new CordonError('invalid_argument', 'session_token: printable characters without spaces', { field: 'session_token' });
  return { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, ...(c.sessionToken ? { sessionToken: c.sessionToken } : {}) };
}

export class S3CredentialStore {
  constructor(private readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
  }

  private file(name: string): string {
    if (!CREDENTIALS_NAME.test(name)) throw new CordonError('invalid_argument', `credentials: "${name}" is not a credentials name (letters, digits, _ . -, up to 63)`, { field: 'credentials' });
    return join(this.dir, `${name}.json`);
  }

  /** Register (or replace) credentials: written to a 0600 temporary file, then renamed into place. */
  async put(name: string, c: S3Credentials): Promise<void> {
    const file = this.file(name);
    const clean = checkCredentials(c);
    const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(clean), { mode: 0o600, flag: 'wx' });
      await rename(tmp, file);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }

  /** The secret itself: for the daemon's own S3 client and s3fs only. */
  async get(name: string): Promise<S3Credentials> {
    const text = await readFile(this.file(name), 'utf8').catch(() => {
      throw new CordonError('not_found', `credentials ${name} are not registered; add them with cordon s3 credentials add ${name}`, { field: 'credentials' });
    });
    return checkCredentials(JSON.parse(text) as S3Credentials);
  }

  async has(name: string): Promise<boolean> {
    return this.get(name).then(() => true, () => false);
  }

  /** Names and the access key's first characters (enough to tell them apart), never the secret. */
  async list(): Promise<{ name: string; access_key_hint: string }[]> {
    const out: { name: string; access_key_hint: string }[] = [];
    for (const f of (await readdir(this.dir).catch(() => [] as string[])).sort()) {
      if (!f.endsWith('.json')) continue;
      const name = f.slice(0, -5);
      const c = await this.get(name).catch(() => undefined);
      if (c) out.push({ name, access_key_hint: `${c.accessKeyId.slice(0, 4)}…` });
    }
    return out;
  }

  async remove(name: string): Promise<void> {
    const file = this.file(name);
    if (!(await this.has(name))) throw new CordonError('not_found', `credentials ${name} are not registered`, { field: 'credentials' });
    await rm(file, { force: true });
  }
}
