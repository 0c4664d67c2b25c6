import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import { CordonError } from '../../errors/registry.js';
import type { VolumeInfo } from '../../sdk/volumes.js';
import { client, collect, printJson, table } from '../output.js';

const human = (n: number | null) => (n === null ? '-' : n >= 1024 ** 3 ? `${(n / 1024 ** 3).toFixed(1)}G` : `${(n / 1024 ** 2).toFixed(1)}M`);

/** "NAME:/path" names a path in a volume; anything else is local. */
function inVolume(spec: string): { name: string; path: string } | undefined {
  const m = /^([A-Za-z0-9][A-Za-z0-9_.-]{0,62}):(\/.*)$/.exec(spec);
  return m ? { name: m[1], path: m[2] } : undefined;
}

export function registerVolume(program: Command): void {
  const volume = program.command('volume').description('named volumes: create, ls, inspect, rm, cp (they outlive sandboxes; mount with -v NAME:/path[:ro])');

  volume
    .command('create')
    .description('create a named volume (an ext4 image of --size: writes past it get ENOSPC)')
    .argument('<name>')
    .option('--size <size>', 'size, e.g. 512m or 10g', '1g')
    .option('-l, --label <k=v>', 'label (repeatable)', collect, [])
    .option('--json', 'print JSON')
    .action(async (name: string, o: { size: string; label: string[]; json?: boolean }) => {
      const labels: Record<string, string> = {};
      for (const l of o.label) {
        const i = l.indexOf('=');
        if (i <= 0) throw new CordonError('invalid_argument', `--label "${l}" must look like key=value`);
        labels[l.slice(0, i)] = l.slice(i + 1);
      }
      const v = await client().volumes.create(name, { size: o.size, labels });
      if (o.json) printJson(v);
      else process.stdout.write(`${v.name}\n`);
    });

  volume
    .command('ls')
    .description('list volumes')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const list = await client().volumes.list();
      if (o.json) return printJson(list);
      const rows = [['NAME', 'ID', 'SIZE', 'USED', 'MOUNTED BY'], ...list.map((v: VolumeInfo) => [v.name, v.id, human(v.size), human(v.used), v.mounted_by.join(',') || '-'])];
      process.stdout.write(`${table(rows)}\n`);
    });

  volume
    .command('inspect')
    .description('show a volume (by name or id)')
    .argument('<name>')
    .option('--json', 'print JSON (the default)')
    .action(async (name: string) => printJson(await client().volumes.inspect(name)));

  volume
    .command('rm')
    .description('remove volumes; refused while a sandbox mounts one unless -f')
    .argument('<names...>')
    .option('-f, --force', 'remove even while mounted (those sandboxes keep their view until they stop)')
    .option('--json', 'print JSON')
    .action(async (names: string[], o: { force?: boolean; json?: boolean }) => {
      const c = client();
      for (const n of names) await c.volumes.remove(n, { force: o.force });
      if (o.json) printJson({ removed: names });
      else process.stdout.write(`${names.join('\n')}\n`);
    });

  volume
    .command('cp')
    .description('copy a file between the host and a volume (NAME:/path), streamed')
    .argument('<src>')
    .argument('<dst>')
    .option('--json', 'print JSON')
    .action(async (src: string, dst: string, o: { json?: boolean }) => {
      const from = inVolume(src);
      const to = inVolume(dst);
      if ((from && to) || (!from && !to)) throw new CordonError('invalid_argument', 'exactly one side must be a volume path like NAME:/path/file');
      const c = client();
      if (to) {
        const st = statSync(src, { throwIfNoEntry: false });
        if (!st) throw new CordonError('not_found', `${src} does not exist`);
        if (!st.isFile()) throw new CordonError('invalid_argument', `${src} is not a regular file; cp copies single files (tar a directory first)`);
        const info = await c.volumes.files(to.name).write(to.path, createReadStream(src), { mode: st.mode & 0o777 });
        if (o.json) printJson(info);
      } else {
        const stream = await c.volumes.files(from!.name).readStream(from!.path);
        await pipeline(stream, dst === '-' ? process.stdout : createWriteStream(dst));
        if (o.json && dst !== '-') printJson({ copied: src, to: dst });
      }
    });
}

/** -v NAME:/path[:ro|rw] */
export function parseVolumeFlag(v: string): { name: string; path: string; read_only?: boolean } {
  const parts = v.split(':');
  if (parts.length < 2 || parts.length > 3 || !parts[0] || !parts[1].startsWith('/')) throw new CordonError('invalid_argument', `-v "${v}" must look like NAME:/path or NAME:/path:ro`);
  if (parts[2] !== undefined && parts[2] !== 'ro' && parts[2] !== 'rw') throw new CordonError('invalid_argument', `-v "${v}": the mode is ro or rw`);
  return { name: parts[0], path: parts[1], ...(parts[2] === 'ro' ? { read_only: true } : {}) };
}

const BOOL: Record<string, boolean> = { true: true, '1': true, false: false, '0': false };

/** Docker's --mount: type=bind|overlay|tmpfs,source|src=…,target|dst|destination=…,readonly|ro[=true],tmpfs-size=… */
export function parseMountFlag(v: string): { type: 'bind' | 'overlay' | 'tmpfs'; source?: string; target: string; read_only?: boolean; tmpfs_size?: string } {
  const out: { type?: string; source?: string; target?: string; read_only?: boolean; tmpfs_size?: string } = {};
  for (const field of v.split(',')) {
    const i = field.indexOf('=');
    const key = (i < 0 ? field : field.slice(0, i)).trim().toLowerCase();
    const val = i < 0 ? undefined : field.slice(i + 1);
    switch (key) {
      case 'type':
        out.type = val;
        break;
      case 'source':
      case 'src':
        out.source = val;
        break;
      case 'target':
      case 'dst':
      case 'destination':
        out.target = val;
        break;
      case 'readonly':
      case 'ro':
        if (val !== undefined && !(val in BOOL)) throw new CordonError('invalid_argument', `--mount "${v}": ${key} is true or false`);
        out.read_only = val === undefined ? true : BOOL[val];
        break;
      case 'tmpfs-size':
        out.tmpfs_size = val;
        break;
      default:
        throw new CordonError('invalid_argument', `--mount "${v}": unknown field "${key}"; use type, source (src), target (dst), readonly (ro), tmpfs-size`);
    }
  }
  const type = out.type ?? 'bind';
  if (type !== 'bind' && type !== 'overlay' && type !== 'tmpfs') throw new CordonError('invalid_argument', `--mount "${v}": type is bind, overlay or tmpfs`);
  if (!out.target) throw new CordonError('invalid_argument', `--mount "${v}": target (dst) is required`);
  if (type !== 'tmpfs' && !out.source) throw new CordonError('invalid_argument', `--mount "${v}": source (src) is required for type=${type}`);
  if (type === 'tmpfs' && out.source) throw new CordonError('invalid_argument', `--mount "${v}": tmpfs takes no source`);
  if (type !== 'tmpfs' && out.tmpfs_size) throw new CordonError('invalid_argument', `--mount "${v}": tmpfs-size is only for type=tmpfs`);
  return { type, target: out.target, ...(out.source ? { source: out.source } : {}), ...(out.read_only !== undefined ? { read_only: out.read_only } : {}), ...(out.tmpfs_size ? { tmpfs_size: out.tmpfs_size } : {}) };
}
