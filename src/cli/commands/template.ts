import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import tar from 'tar-stream';
import { CordonError } from '../../errors/registry.js';
import { ignoreMatcher } from '../../image/template-build/dockerignore.js';
import type { BuildEvent, TemplateInfo } from '../../sdk/templates.js';
import { client, collect, printJson, table } from '../output.js';
import { networkOptionsFrom } from './network-options.js';

export { OUTSIDE_DOCKERFILE } from '../../image/template-build/context.js';
import { OUTSIDE_DOCKERFILE } from '../../image/template-build/context.js';

/**
 * The context directory as a tar stream: what .dockerignore excludes is left out (the daemon applies it
 * again), symlinks are sent as links, other special files are skipped. A Dockerfile outside the
 * context is added under OUTSIDE_DOCKERFILE.
 */
function contextTar(dir: string, outsideDockerfile?: string): Readable {
  let ignore = ignoreMatcher('');
  try {
    if (lstatSync(join(dir, '.dockerignore')).isFile()) ignore = ignoreMatcher(readFileSync(join(dir, '.dockerignore'), 'utf8'));
  } catch {
    /* no .dockerignore */
  }
  const pack = tar.pack();
  const add = (h: tar.Headers, body?: string) =>
    body === undefined
      ? new Promise<void>((res, rej) => pack.entry(h, (e) => (e ? rej(e) : res())))
      : pipeline(createReadStream(body), pack.entry(h));
  const walk = async (rel: string): Promise<void> => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(dir, r);
      const st = lstatSync(p);
      if (ignore(r, st.isDirectory()) && !(st.isDirectory() && ignore.mayReinclude(r))) continue;
      const base = { name: r, mode: st.mode & 0o7777, mtime: st.mtime, uid: 0, gid: 0 };
      if (st.isSymbolicLink()) await add({ ...base, type: 'symlink', linkname: readlinkSync(p) });
      else if (st.isDirectory()) {
        if (!ignore(r, true)) await add({ ...base, name: `${r}/`, type: 'directory' });
        await walk(r);
      } else if (st.isFile()) await add({ ...base, type: 'file', size: st.size }, p);
    }
  };
  void (async () => {
    try {
      await walk('');
      if (outsideDockerfile) {
        const st = lstatSync(outsideDockerfile);
        await add({ name: OUTSIDE_DOCKERFILE, mode: 0o644, type: 'file', size: st.size }, outsideDockerfile);
      }
      pack.finalize();
    } catch (e) {
      pack.destroy(e as Error);
    }
  })();
  return pack;
}

/** Docker-like progress: step headers and cache hits on stderr, step output as it comes. */
function printer(): (ev: BuildEvent) => void {
  return (ev) => {
    if (ev.type === 'step') process.stderr.write(`Step ${ev.step}/${ev.total} : ${ev.instruction}\n`);
    else if (ev.type === 'cached') process.stderr.write(` ---> Using cache (layer ${ev.layer})\n`);
    else if (ev.type === 'sandbox') process.stderr.write(` ---> Running in sandbox ${ev.sandbox_id}\n`);
    else if (ev.type === 'layer') process.stderr.write(` ---> layer ${ev.layer}\n`);
    else if (ev.type === 'status') process.stderr.write(`${ev.message}\n`);
    else if (ev.type === 'log') (ev.stream === 'stderr' ? process.stderr : process.stdout).write(ev.data);
  };
}

export function registerTemplate(program: Command): void {
  const t = program.command('template').description('templates built from a Dockerfile: build, list, inspect, remove');

  t.command('build')
    .description('build a template from a Dockerfile; each step runs in a sandbox and is cached by content')
    .argument('<name>')
    .option('-f, --file <path>', 'the Dockerfile (default: CONTEXT/Dockerfile)')
    .option('--context <dir>', 'the build context directory', '.')
    .option('--cpus <n>', 'CPU limit of each step sandbox')
    .option('--memory <size>', 'memory limit of each step sandbox, e.g. 1g')
    .option('--no-cache', 'run every step again, reusing no cached layer')
    .option('--build-arg <K=V>', 'value for an ARG (repeatable)', collect, [])
    .option('--start-cmd <cmd>', 'run in the background in every sandbox of the template (checked once by the build)')
    .option('--ready-cmd <cmd>', 'create returns once this exits 0 (polled); the build fails if it never does')
    .option('--ready-timeout <seconds>', 'how long the ready command may take to pass (default 120)')
    .option('--step-timeout <seconds>', 'deadline of one RUN step (default 1800)')
    .option('--warm <n>', 'keep N started sandboxes of the template for creates to claim (its warm pool)')
    .option('--network <mode>', 'network of RUN steps: none (default), allowlist or open')
    .option('--allow-host <pattern>', 'allow egress to this host (repeatable; implies allowlist)', collect, [])
    .option('--deny-host <pattern>', 'deny egress to this host (repeatable)', collect, [])
    .option('--add-host <name:ip>', 'resolve NAME to IP in RUN steps (repeatable)', collect, [])
    .option('--dns-server <ip>', 'upstream DNS server for RUN steps (repeatable)', collect, [])
    .option('--json', 'print the build events as NDJSON, then the template')
    .action(async (name: string, o: Record<string, unknown>) => {
      const context = resolve(o.context as string);
      if (!lstatSync(context, { throwIfNoEntry: false })?.isDirectory()) throw new CordonError('invalid_argument', `--context ${context} is not a directory`);
      const file = resolve(context, (o.file as string | undefined) ?? 'Dockerfile');
      const rel = relative(context, file);
      const inside = !rel.startsWith('..') && !rel.startsWith(sep) && rel !== '';
      if (!lstatSync(file, { throwIfNoEntry: false })?.isFile()) throw new CordonError('invalid_argument', `the Dockerfile ${file} does not exist; pass -f PATH`);
      const buildArgs: Record<string, string> = {};
      for (const a of o.buildArg as string[]) {
        const i = a.indexOf('=');
        if (i <= 0) buildArgs[a] = process.env[a] ?? '';
        else buildArgs[a.slice(0, i)] = a.slice(i + 1);
      }
      const json = !!o.json;
      const tpl = await client().templates.build(name, contextTar(context, inside ? undefined : file), {
        dockerfile: inside ? rel.split(sep).join('/') : OUTSIDE_DOCKERFILE,
        cpus: o.cpus === undefined ? undefined : Number(o.cpus),
        memory: o.memory as string | undefined,
        noCache: o.cache === false,
        network: networkOptionsFrom(o) as Record<string, unknown> | undefined,
        buildArgs,
        startCmd: o.startCmd as string | undefined,
        readyCmd: o.readyCmd as string | undefined,
        stepTimeout: o.stepTimeout === undefined ? undefined : Number(o.stepTimeout),
        readyTimeout: o.readyTimeout === undefined ? undefined : Number(o.readyTimeout),
        warm: o.warm === undefined ? undefined : Number(o.warm),
        onEvent: json ? (ev) => process.stdout.write(`${JSON.stringify(ev)}\n`) : printer(),
      });
      if (json) process.stdout.write(`${JSON.stringify({ type: 'result', template: tpl })}\n`);
      else console.log(`built template ${tpl.name} (${tpl.layers.length} layers on ${tpl.from})`);
    });

  t.command('ls')
    .description('list templates')
    .option('--json', 'print JSON')
    .option('-q, --quiet', 'print only names')
    .action(async (o: { json?: boolean; quiet?: boolean }) => {
      const list = await client().templates.list();
      if (o.json) return printJson(list);
      if (o.quiet) return list.forEach((x) => console.log(x.name));
      console.log(table([['NAME', 'FROM', 'LAYERS', 'CREATED'], ...list.map((x: TemplateInfo) => [x.name, x.from, String(x.layers.length), x.created_at])]));
    });

  t.command('inspect')
    .description('show a template as JSON')
    .argument('<name>')
    .option('--json', 'print JSON (the default)')
    .action(async (name: string) => printJson(await client().templates.get(name)));

  t.command('warm')
    .description('keep N started, unclaimed sandboxes of a template; creates of it claim one (0 empties the pool)')
    .argument('<name>')
    .argument('<n>')
    .option('--network <m>', 'M of the N wait in a network namespace that reaches nothing, for creates with a network policy (default: as before, at most N)')
    .option('--json', 'print JSON')
    .action(async (name: string, n: string, o: { json?: boolean; network?: string }) => {
      if (!/^\d+$/.test(n)) throw new CordonError('invalid_argument', `N must be a whole number, got ${n}`);
      if (o.network !== undefined && !/^\d+$/.test(o.network)) throw new CordonError('invalid_argument', `--network must be a whole number, got ${o.network}`);
      const tpl = await client().templates.setWarm(name, Number(n), { network: o.network === undefined ? undefined : Number(o.network) });
      if (o.json) return printJson(tpl);
      console.log(`template ${name} keeps ${tpl.warm.size} warm, ${tpl.warm.network} of them with a network namespace (${tpl.warm.ready} ready, ${tpl.warm.starting} starting)`);
    });

  t.command('rm')
    .description('remove templates (refused while sandboxes or other templates use them)')
    .argument('<names...>')
    .option('--json', 'print JSON')
    .action(async (names: string[], o: { json?: boolean }) => {
      for (const n of names) await client().templates.remove(n);
      if (o.json) printJson({ removed: names });
      else names.forEach((n) => console.log(`removed ${n}`));
    });
}
