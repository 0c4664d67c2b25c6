import type { Command } from 'commander';
import { exitCodeFor } from '../../errors/registry.js';
import { formatBytes } from '../../util/units.js';
import type { SnapshotInfo } from '../../sdk/types.js';
import { client, printJson, table } from '../output.js';

function row(s: SnapshotInfo): string[] {
  return [s.id, s.name ?? '', s.kind, s.runtime, s.source_sandbox, formatBytes(s.size_bytes), s.created_at];
}

export function registerSnapshot(program: Command): void {
  const snap = program.command('snapshot').description('snapshots of running sandboxes: create, ls, inspect, rm');

  snap
    .command('create')
    .description('snapshot a running sandbox (it keeps running); prints the snapshot id')
    .argument('<sandbox>')
    .option('--name <name>', 'a name to create sandboxes from (moves to this snapshot if another had it)')
    .option('--json', 'print the snapshot as JSON')
    .action(async (id: string, o: { name?: string; json?: boolean }) => {
      const s = await client().sandbox(id).snapshot({ name: o.name });
      if (o.json) printJson(s);
      else console.log(s.id);
    });

  snap
    .command('ls')
    .description('list snapshots, oldest first')
    .option('--sandbox <id>', 'only those taken from this sandbox')
    .option('-q, --quiet', 'print ids only')
    .option('--json', 'print JSON')
    .action(async (o: { sandbox?: string; quiet?: boolean; json?: boolean }) => {
      const list = await client().snapshots({ sandbox: o.sandbox });
      if (o.json) return printJson(list);
      if (o.quiet) return list.forEach((s) => console.log(s.id));
      console.log(table([['ID', 'NAME', 'KIND', 'RUNTIME', 'SOURCE', 'SIZE', 'CREATED'], ...list.map(row)]));
    });

  snap
    .command('inspect')
    .description('show a snapshot and what uses it, as JSON')
    .argument('<snapshot>', 'id or name')
    .option('--json', 'print JSON (always on)')
    .action(async (ref: string) => printJson(await client().snapshot(ref)));

  snap
    .command('rm')
    .description('remove snapshots no sandbox uses (refused, naming the users, otherwise)')
    .argument('<snapshot...>', 'ids or names')
    .option('--json', 'print JSON')
    .action(async (refs: string[], o: { json?: boolean }) => {
      for (const ref of refs) await client().removeSnapshot(ref);
      if (o.json) printJson({ removed: refs });
      else refs.forEach((r) => console.log(r));
    });

  program
    .command('fork')
    .description("new sandboxes from a running sandbox's current state (it keeps running); prints their ids")
    .argument('<sandbox>')
    .option('--count <n>', 'how many', '1')
    .option('--timeout <duration>', 'remove each fork after this long, e.g. 10m')
    .option('--json', 'print one entry per fork: {sandbox} or {error}')
    .action(async (id: string, o: { count: string; timeout?: string; json?: boolean }) => {
      const results = await client().sandbox(id).fork({ count: Number(o.count), timeout: o.timeout });
      if (o.json) return printJson(results);
      for (const r of results) {
        if (r.sandbox) console.log(r.sandbox.id);
        else {
          console.error(`cordon: a fork failed: ${r.error?.message}`);
          // The first failure's code decides, as for any other command.
          process.exitCode ||= exitCodeFor(r.error?.code);
        }
      }
    });
}
