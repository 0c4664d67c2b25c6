// Input pieces several tools share. The daemon validates every field again (these bounds keep a
// call from carrying more than a model could mean); its 400s come back as isError results.
import { z } from 'zod';

export const sandboxId = z.string().min(1).max(128).describe('sandbox id, as create_sandbox or list_sandboxes gave it');
export const sandboxPath = z.string().min(1).max(4096).describe('absolute path inside the sandbox, e.g. /tmp/notes.txt');
export const duration = z
  .union([z.string().max(32), z.number().positive().max(30 * 24 * 3600)])
  .describe('a duration like "30s", "10m", "2h", or a number of seconds');
export const size = z.union([z.string().max(32), z.number().int().positive()]).describe('a size like "512m", "2g", or a number of bytes');
export const envMap = z
  .record(z.string().max(256), z.string().max(32 * 1024))
  .refine((e) => Object.keys(e).length <= 256, 'at most 256 variables')
  .describe('environment variables, NAME -> value');
export const hostList = z.array(z.string().min(1).max(253)).max(256);
export const commandLine = z
  .string()
  .min(1)
  .max(64 * 1024)
  .describe('shell command line, run with /bin/sh -c (pipes, redirects and && work)');

/** The argv of a shell command line; the sandbox's own shell interprets it, never the host's. */
export const shellArgv = (command: string) => ['/bin/sh', '-c', command];
