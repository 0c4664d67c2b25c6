import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { CordonError } from '../../errors/registry.js';
import { client, printJson } from '../output.js';

/** "ID:/path" names a path in a sandbox; anything else is local. */
function remote(spec: string): { id: string; path: string } | undefined {
  const m = /^([a-z0-9][a-z0-9-]{0,62}):(\/.*)$/.exec(spec);
  return m ? { id: m[1], path: m[2] } : undefined;
}

export function registerCp(program: Command): void {
  program
    .command('cp')
    .description('copy a file between the host and a sandbox (ID:/path), streamed')
    .argument('<src>')
    .argument('<dst>')
    .option('-u, --user <user>', 'user to read or write as inside the sandbox')
    .option('--json', 'print JSON')
    .action(async (src: string, dst: string, o: { user?: string; json?: boolean }) => {
      const from = remote(src);
      const to = remote(dst);
      if ((from && to) || (!from && !to)) throw new CordonError('invalid_argument', 'exactly one side must be a sandbox path like ID:/path/file');
      const c = client();
      if (to) {
        const st = statSync(src);
        if (!st.isFile()) throw new CordonError('invalid_argument', `${src} is not a regular file; cp copies single files (tar a directory first)`);
        const info = await c.sandbox(to.id).files.write(to.path, createReadStream(src), { user: o.user, mode: st.mode & 0o777 });
        if (o.json) printJson(info);
      } else {
        const stream = await c.sandbox(from!.id).files.readStream(from!.path, { user: o.user });
        await pipeline(stream, dst === '-' ? process.stdout : createWriteStream(dst));
        if (o.json && dst !== '-') printJson({ copied: src, to: dst });
      }
    });
}
