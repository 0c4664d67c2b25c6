import { spawn } from 'node:child_process';
import { createReadStream, statSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Command } from 'commander';
import { CordonError } from '../../errors/registry.js';
import type { ImageInfo, PullProgress } from '../../sdk/images.js';
import { client, printJson, table } from '../output.js';

const mb = (n: number) => `${(n / 1e6).toFixed(1)}MB`;
const short = (d: string) => d.replace(/^sha256:/, '').slice(0, 12);

/** Per-layer bytes and a total on stderr: redrawn in place on a terminal, one line per change otherwise. */
function progressPrinter(): (ev: PullProgress) => void {
  const tty = process.stderr.isTTY;
  const layers = new Map<string, string>();
  let drawn = 0;
  let lastDone = -1;
  let lastAt = 0;
  return (ev) => {
    if (ev.type === 'status') {
      process.stderr.write(`${ev.message}\n`);
      return;
    }
    if (ev.type === 'layer') {
      const state = ev.status === 'downloading' ? `${mb(ev.current)}/${mb(ev.total ?? 0)}` : ev.status;
      layers.set(ev.digest, `${short(ev.digest)}: ${state}`);
      if (!tty && ev.status !== 'downloading') process.stderr.write(`${layers.get(ev.digest)}\n`);
      return;
    }
    const total = `total: ${mb(ev.current)}/${mb(ev.total)} (${ev.layersDone}/${ev.layers} layers)`;
    if (tty) {
      if (drawn) process.stderr.write(`\x1b[${drawn}A`);
      const lines = [...layers.values(), total];
      process.stderr.write(lines.map((l) => `\x1b[2K${l}\n`).join(''));
      drawn = lines.length;
    } else if (ev.layersDone !== lastDone || Date.now() - lastAt > 1000) {
      // Without a terminal: a line when a layer finishes, and at most one a second in between.
      process.stderr.write(`${total}\n`);
      lastDone = ev.layersDone;
      lastAt = Date.now();
    }
  };
}

/** Stream a file, or a directory packed as a tar (OCI layout or unpacked docker save). */
function archiveStream(path: string): Readable {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st) throw new CordonError('not_found', `${path} does not exist`);
  if (!st.isDirectory()) return createReadStream(path);
  const tar = spawn('tar', ['-C', path, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return tar.stdout;
}

export function registerImage(program: Command): void {
  const image = program.command('image').description('OCI images: pull, import, list, inspect, remove, prune');

  image
    .command('pull')
    .description('pull an image from a registry (Docker Hub shorthand: busybox → docker.io/library/busybox:latest)')
    .argument('<ref>')
    .option('-q, --quiet', 'print only the image ID')
    .option('--json', 'print the image as JSON, no progress')
    .option('--username <user>', 'registry user (default: ~/.docker/config.json)')
    .option('--password-stdin', 'read the registry password from stdin')
    .action(async (ref: string, o: { quiet?: boolean; json?: boolean; username?: string; passwordStdin?: boolean }) => {
      let password: string | undefined;
      if (o.passwordStdin) {
        const chunks: Buffer[] = [];
        for await (const c of process.stdin) chunks.push(c as Buffer);
        password = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
      }
      const img = await client().images.pull(ref, { username: o.username, password, onProgress: o.quiet || o.json ? undefined : progressPrinter() });
      if (o.json) printJson(img);
      else if (o.quiet) console.log(img.id);
      else console.log(`${img.name} ${img.digest}`);
    });

  image
    .command('import')
    .description('import a docker save archive or an OCI layout (file or directory)')
    .argument('<path>')
    .option('--name <ref>', 'name for the (first) imported image')
    .option('--json', 'print the imported images as JSON')
    .action(async (path: string, o: { name?: string; json?: boolean }) => {
      const imgs = await client().images.importArchive(archiveStream(path), { name: o.name });
      if (o.json) printJson(imgs);
      else for (const i of imgs) console.log(`${i.name} ${short(i.id)}`);
    });

  image
    .command('ls')
    .description('list images')
    .option('--json', 'print JSON')
    .option('-q, --quiet', 'print only names')
    .action(async (o: { json?: boolean; quiet?: boolean }) => {
      const imgs = await client().images.list();
      if (o.json) return printJson(imgs);
      if (o.quiet) return imgs.forEach((i) => console.log(i.name));
      console.log(table([['NAME', 'ID', 'SIZE', 'LAYERS', 'STORED'], ...imgs.map((i: ImageInfo) => [i.name, short(i.id), mb(i.size), String(i.layers.length), i.stored_at])]));
    });

  image
    .command('inspect')
    .description('show an image (name or ID) as JSON')
    .argument('<ref>')
    .option('--json', 'print JSON (the default)')
    .action(async (ref: string) => printJson(await client().images.get(ref)));

  image
    .command('rm')
    .description('remove image names (layers are freed by prune)')
    .argument('<refs...>')
    .option('-f, --force', 'remove even if a sandbox uses it')
    .option('--json', 'print JSON')
    .action(async (refs: string[], o: { force?: boolean; json?: boolean }) => {
      const removed: string[] = [];
      for (const r of refs) removed.push(...(await client().images.remove(r, { force: o.force })).removed);
      if (o.json) printJson({ removed });
      else removed.forEach((r) => console.log(`removed ${r}`));
    });

  image
    .command('prune')
    .description('delete layers that no image and no sandbox uses')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const r = await client().images.prune();
      if (o.json) printJson(r);
      else console.log(`removed ${r.removed_layers.length} layers, kept ${r.kept_layers}`);
    });
}
