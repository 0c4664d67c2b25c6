import type { Command } from 'commander';
import { CordonError } from '../../errors/registry.js';
import { client, collect, envFrom, printJson, table } from '../output.js';
import { addCreateOptions, createOptionsFrom } from './create-options.js';
import { runAttached } from './attach-io.js';
import type { Sandbox } from '../../sdk/client.js';
import { composeCommand } from '../../engine/exec-env.js';

function needCmd(cmd: string[]): string[] {
  if (!cmd.length) throw new CordonError('invalid_argument', 'give a command after --, e.g. cordon run -- echo hello');
  return cmd;
}

async function execIn(sbx: Sandbox, cmd: string[], o: Record<string, unknown>): Promise<number> {
  const env = envFrom(o.env as string[]);
  if (o.json) {
    const r = await sbx.exec(cmd, { env, cwd: o.workdir as string, user: o.user as string, timeout: o.execTimeout as string });
    printJson(r);
    return r.exit_code;
  }
  return runAttached(sbx, cmd, { interactive: !!o.interactive, tty: !!o.tty, env, cwd: o.workdir as string, user: o.user as string, timeout: o.execTimeout as string });
}

export function registerRunExec(program: Command): void {
  addCreateOptions(program.command('run').description('create a sandbox, run a command in it, remove it'))
    .option('-i, --interactive', 'keep stdin open')
    .option('-t, --tty', 'allocate a terminal')
    .option('--keep', 'keep the sandbox after the command exits')
    .option('--rm', 'remove the sandbox afterwards (the default)')
    .option('--json', 'print the result as JSON (output is collected, not streamed)')
    .argument('[cmd...]', 'command and arguments')
    .action(async (cmd: string[], o: Record<string, unknown>) => {
      const c = client();
      const createOpts = createOptionsFrom(o);
      // A built template has an image config (ENTRYPOINT/CMD) like an image; `base` has none.
      const fromConfig = !!createOpts.image || (!!createOpts.template && createOpts.template !== 'base');
      if (!fromConfig) needCmd(cmd);
      // With an image, the command runs in the foreground, so create starts no main process (entrypoint []).
      const sbx = await c.create({ ...createOpts, env: createOpts.env, ...(fromConfig ? { entrypoint: [] } : {}) });
      if (fromConfig) {
        const get = createOpts.image ? c.images.get(createOpts.image) : c.templates.get(createOpts.template!);
        const img = await get.catch(async (e) => {
          await sbx.remove({ force: true }).catch(() => {});
          throw e;
        });
        cmd = composeCommand(img.config, createOpts.entrypoint, cmd);
        if (!cmd.length) {
          await sbx.remove({ force: true }).catch(() => {});
          needCmd(cmd);
        }
      }
      let code = 1;
      try {
        code = await execIn(sbx, cmd, { ...o, env: [], workdir: undefined, user: undefined });
      } finally {
        if (!o.keep) await sbx.remove({ force: true }).catch(() => {});
        else if (!o.json) process.stderr.write(`sandbox ${sbx.id} kept\n`);
      }
      process.exit(code);
    });

  program
    .command('exec')
    .description('run a command in a running sandbox')
    .argument('<id>', 'sandbox id')
    .argument('[cmd...]', 'command and arguments')
    .option('-e, --env <K=V>', 'environment variable (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'working directory')
    .option('-u, --user <user>', 'user to run as')
    .option('-i, --interactive', 'keep stdin open')
    .option('-t, --tty', 'allocate a terminal')
    .option('-d, --detach', 'start in the background and print its pid')
    .option('--tag <tag>', 'name the process, to reconnect to it later')
    .option('--timeout <duration>', 'kill the command after this long')
    .option('--json', 'print the result as JSON')
    .action(async (id: string, cmd: string[], o: Record<string, unknown>) => {
      needCmd(cmd);
      const sbx = client().sandbox(id);
      if (o.detach) {
        const p = await sbx.startProcess(cmd, { env: envFrom(o.env as string[]), cwd: o.workdir as string, user: o.user as string, tag: o.tag as string, timeout: o.timeout as string });
        if (o.json) printJson(p);
        else console.log(p.pid);
        return;
      }
      process.exit(await execIn(sbx, cmd, { ...o, execTimeout: o.timeout }));
    });

  program
    .command('ps')
    .description('list the processes started in a sandbox')
    .argument('<id>')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const ps = await client().sandbox(id).processes();
      if (o.json) return printJson(ps);
      console.log(table([['PID', 'TAG', 'STATE', 'EXIT', 'COMMAND'], ...ps.map((p) => [String(p.pid), p.tag ?? '', p.running ? 'running' : 'exited', p.exit_code === null ? '' : String(p.exit_code), p.cmd.join(' ')])]));
    });

  program
    .command('kill')
    .description('signal a process in a sandbox (by pid or tag)')
    .argument('<id>')
    .argument('<process>')
    .option('-s, --signal <sig>', 'signal name', 'SIGKILL')
    .option('--json', 'print JSON')
    .action(async (id: string, ref: string, o: { signal: string; json?: boolean }) => {
      const sig = o.signal.toUpperCase().startsWith('SIG') ? o.signal.toUpperCase() : `SIG${o.signal.toUpperCase()}`;
      await client().sandbox(id).signal(ref, sig);
      if (o.json) printJson({ signalled: ref, signal: sig });
    });

  program
    .command('logs')
    .description('replay the buffered output of a process (by pid or tag) and follow it until it exits')
    .argument('<id>')
    .argument('<process>')
    .option('--json', 'print events as JSON lines')
    .action(async (id: string, ref: string, o: { json?: boolean }) => {
      for await (const ev of client().sandbox(id).events(ref)) {
        if (o.json) console.log(JSON.stringify('data' in ev ? { ...ev, data: ev.data.toString() } : ev));
        else if (ev.type === 'stdout' || ev.type === 'pty') process.stdout.write(ev.data);
        else if (ev.type === 'stderr') process.stderr.write(ev.data);
      }
    });
}
