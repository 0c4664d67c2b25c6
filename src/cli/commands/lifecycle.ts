import type { Command } from 'commander';
import { formatBytes } from '../../util/units.js';
import type { SandboxInfo, SandboxState } from '../../sdk/types.js';
import { client, collect, printJson, table } from '../output.js';
import { addCreateOptions, createOptionsFrom } from './create-options.js';

function summary(s: SandboxInfo): string[] {
  return [s.id, s.state, s.runtime, s.template ?? s.image ?? '', s.created_at, Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(',')];
}

/** One sandbox id in, the resulting sandbox (or nothing) out: start, stop, pause, resume. */
function simple(program: Command, name: string, description: string, act: (id: string, o: Record<string, string>) => Promise<SandboxInfo>) {
  return program
    .command(name)
    .description(description)
    .argument('<id...>')
    .option('--json', 'print JSON')
    .action(async (ids: string[], o: Record<string, string>) => {
      const out: SandboxInfo[] = [];
      for (const id of ids) out.push(await act(id, o));
      if (o.json) printJson(out.length === 1 ? out[0] : out);
      else for (const s of out) console.log(`${s.id} ${s.state}`);
    });
}

export function registerLifecycle(program: Command): void {
  addCreateOptions(program.command('create').description('create and start a sandbox; prints its id'))
    .option('--json', 'print the sandbox as JSON')
    .argument('[cmd...]', 'optional main command, started in the background with tag "main"')
    .action(async (cmd: string[], o: Record<string, unknown>) => {
      const sbx = await client().create({ ...createOptionsFrom(o), cmd: cmd.length ? cmd : undefined });
      if (o.json) printJson(sbx.info);
      else console.log(sbx.id);
    });

  program
    .command('ls')
    .description('list sandboxes')
    .option('--state <states>', 'comma-separated states to show')
    .option('-l, --label <k=v>', 'only sandboxes with this label (repeatable)', collect, [])
    .option('-q, --quiet', 'print ids only')
    .option('--json', 'print JSON')
    .action(async (o: { state?: string; label: string[]; quiet?: boolean; json?: boolean }) => {
      const labels = Object.fromEntries(o.label.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      const list = await client().list({ state: o.state?.split(',') as SandboxState[] | undefined, labels });
      if (o.json) return printJson(list);
      if (o.quiet) return list.forEach((s) => console.log(s.id));
      console.log(table([['ID', 'STATE', 'RUNTIME', 'SOURCE', 'CREATED', 'LABELS'], ...list.map(summary)]));
    });

  program
    .command('inspect')
    .description('show a sandbox as JSON')
    .argument('<id>')
    .option('--json', 'print JSON (always on)')
    .action(async (id: string) => printJson((await client().get(id)).info));

  simple(program, 'start', 'start a stopped sandbox', (id) => client().sandbox(id).start());
  simple(program, 'pause', 'pause a sandbox: to disk under runsc (memory freed), frozen in memory under crun/runc', (id) => client().sandbox(id).pause());
  simple(program, 'resume', 'resume a paused sandbox (same id, files, processes and network policy)', (id) => client().sandbox(id).resume());
  simple(program, 'stop', 'stop a sandbox (TERM, then KILL after --time)', (id, o) => client().sandbox(id).stop(o.time)).option('-t, --time <duration>', 'grace period before KILL', '10s');

  program
    .command('rm')
    .description('remove sandboxes')
    .argument('<id...>')
    .option('-f, --force', 'remove even if running')
    .option('--json', 'print JSON')
    .action(async (ids: string[], o: { force?: boolean; json?: boolean }) => {
      const c = client();
      for (const id of ids) await c.remove(id, { force: !!o.force });
      if (o.json) printJson({ removed: ids });
      else ids.forEach((id) => console.log(id));
    });

  program
    .command('timeout')
    .description('set the time left before a sandbox is removed (0 = never)')
    .argument('<id>')
    .argument('<duration>')
    .option('--json', 'print JSON')
    .action(async (id: string, d: string, o: { json?: boolean }) => {
      const s = await client().sandbox(id).setTimeout(d);
      if (o.json) printJson(s);
      else console.log(`${s.id} expires at ${s.expires_at ?? 'never'}`);
    });

  program
    .command('update')
    .description('change the memory limit of a running sandbox')
    .argument('<id>')
    .requiredOption('--memory <size>', 'new memory limit, e.g. 256m')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { memory: string; json?: boolean }) => {
      const s = await client().sandbox(id).setMemoryLimit(o.memory);
      if (o.json) printJson(s);
      else console.log(`${s.id} memory ${formatBytes(s.config.memory)}`);
    });

  program
    .command('stats')
    .description('resource usage of sandboxes')
    .argument('<id...>')
    .option('--json', 'print JSON')
    .action(async (ids: string[], o: { json?: boolean }) => {
      const c = client();
      const rows = await Promise.all(ids.map(async (id) => ({ id, ...(await c.sandbox(id).stats()) })));
      if (o.json) return printJson(ids.length === 1 ? rows[0] : rows);
      console.log(
        table([
          ['ID', 'CPU %', 'MEM USAGE / LIMIT', 'MEM %', 'PIDS', 'NET RX/TX', 'DISK R/W'],
          ...rows.map((r) => [r.id, r.cpu_percent.toFixed(2), `${formatBytes(r.memory_usage)} / ${formatBytes(r.memory_limit)}`, r.memory_percent.toFixed(2), String(r.pid_count), `${formatBytes(r.network_rx)}/${formatBytes(r.network_tx)}`, `${formatBytes(r.disk_read)}/${formatBytes(r.disk_write)}`]),
        ]),
      );
    });

  program
    .command('events')
    .description("a sandbox's lifecycle events (created, oom, died, ...)")
    .argument('<id>')
    .option('--json', 'print JSON (with --follow: one JSON object per line)')
    .option('-f, --follow', 'print the events so far, then new ones as they happen (until interrupted)')
    .option('--type <type>', 'only events of this type (e.g. network)')
    .action(async (id: string, o: { json?: boolean; follow?: boolean; type?: string }) => {
      const line = (e: { ts: string; type: string; message: string }) => console.log(`${e.ts}  ${e.type.padEnd(8)} ${e.message}`);
      if (o.follow) {
        for await (const e of client().sandbox(id).followEvents({ type: o.type, after: 0 })) {
          if (o.json) process.stdout.write(`${JSON.stringify(e)}\n`);
          else line(e);
        }
        return;
      }
      const evs = (await client().sandbox(id).events_()).filter((e) => !o.type || e.type === o.type);
      if (o.json) return printJson(evs);
      for (const e of evs) line(e);
    });
}
