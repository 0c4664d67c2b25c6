import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import type { CopyItem } from './context.js';

export interface CopyOwnership {
  uid: number;
  gid: number;
  /** --chmod: the mode of every copied file and directory. */
  mode?: number;
}

/**
 * A tar of what a COPY takes, named relative to the image's root, with numeric owners (--chown, or
 * root as Docker does) and modes (--chmod, or the context's). It is unpacked inside the build
 * sandbox, so every path in the image is resolved there, never on the host.
 */
export function copyTar(contextDir: string, items: CopyItem[], own: CopyOwnership): Readable {
  const pack = tar.pack();
  void (async () => {
    try {
      for (const it of items) {
        const name = it.dest.replace(/^\/+/, '');
        if (!name) continue;
        const base = { name, uid: own.uid, gid: own.gid, uname: '', gname: '', mtime: new Date(0) };
        const mode = own.mode ?? it.entry.mode;
        if (it.entry.type === 'dir') await entry(pack, { ...base, type: 'directory', mode });
        else if (it.entry.type === 'symlink') await entry(pack, { ...base, type: 'symlink', linkname: it.entry.link, mode: 0o777 });
        else {
          const body = pack.entry({ ...base, type: 'file', mode, size: it.entry.size });
          await pipeline(createReadStream(join(contextDir, it.entry.rel)), body);
        }
      }
      pack.finalize();
    } catch (e) {
      pack.destroy(e as Error);
    }
  })();
  return pack;
}

function entry(pack: tar.Pack, h: tar.Headers): Promise<void> {
  return new Promise((resolve, reject) => pack.entry(h, (e) => (e ? reject(e) : resolve())));
}
