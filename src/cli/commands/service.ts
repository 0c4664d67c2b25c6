import type { Command } from 'commander';
import { existsSync, realpathSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isLoopback } from '../../config.js';
import { assertSafeWord, SCRIPT_FOR, type InitSystem } from '../../service/init-scripts.js';
import { printJson } from '../output.js';

/** bin/cordon.js of this installation, with symlinks (a global install's bin link) resolved. */
const CLI = realpathSync(fileURLToPath(new URL('../../../../bin/cordon.js', import.meta.url)));

function detectInit(): InitSystem {
  if (existsSync('/run/systemd/system')) return 'systemd';
  if (existsSync('/sbin/openrc-run')) return 'openrc';
  return 'sysv';
}

export function registerService(program: Command): void {
  const service = program.command('service').description('run the daemon as a system service');
  service
    .command('install')
    .description('write a systemd unit (or an OpenRC / plain init script where there is no systemd); it does not enable or start it')
    .option('--data-dir <dir>', 'the daemon\'s data directory', '/var/lib/cordon')
    .option('--listen <host:port>', 'address the daemon serves on', '127.0.0.1:7070')
    .option('--api-key-file <file>', 'file holding the API key (required off loopback); keep it mode 0600')
    .option('--init <system>', 'auto|systemd|openrc|sysv', 'auto')
    .option('--serve-arg <flag>', 'another cordon serve flag or value, one word each (repeatable), e.g. --serve-arg=--runtime --serve-arg=crun', (v: string, p: string[] = []) => [...p, v], [])
    .option('--print', 'print the file to stdout instead of writing it')
    .option('--output <path>', 'write here instead of the init system\'s usual place')
    .option('--force', 'replace an existing file')
    .option('--json', 'print {init, path, written, next, content}')
    .action(async (o) => {
      const init: InitSystem = o.init === 'auto' ? detectInit() : o.init;
      if (!(init in SCRIPT_FOR)) throw new Error(`--init must be auto, systemd, openrc or sysv, got ${o.init}`);
      if (!/^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(o.listen)) throw new Error(`--listen must look like 127.0.0.1:7070, got ${o.listen}`);
      for (const [flag, v] of [['--data-dir', o.dataDir], ['--api-key-file', o.apiKeyFile], ['--output', o.output]] as const) {
        if (v === undefined) continue;
        if (!isAbsolute(v) || v.split('/').includes('..')) throw new Error(`${flag} must be an absolute path without .., got ${v}`);
        assertSafeWord(flag, v);
      }
      const host = o.listen.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
      if (!isLoopback(host) && !o.apiKeyFile) throw new Error(`listening on ${host} needs an API key: pass --api-key-file FILE (a file holding the key, mode 0600)`);
      for (const w of o.serveArg as string[]) assertSafeWord('--serve-arg', w);
      const kind = SCRIPT_FOR[init];
      const content = kind.make({ node: realpathSync(process.execPath), cli: CLI, listen: o.listen, dataDir: o.dataDir, apiKeyFile: o.apiKeyFile, extraArgs: o.serveArg });
      const path = o.output ?? kind.path;
      const next = o.output ? [] : kind.next;
      if (o.print) {
        if (o.json) printJson({ init, path, written: false, next, content });
        else process.stdout.write(content);
        return;
      }
      if (existsSync(path) && !o.force) throw new Error(`${path} exists; pass --force to replace it, or --print to review the new one`);
      await writeFile(path, content, { mode: kind.mode });
      if (o.json) printJson({ init, path, written: true, next, content });
      else {
        process.stdout.write(`wrote ${path} (${init})\n`);
        if (o.apiKeyFile && !existsSync(o.apiKeyFile)) process.stdout.write(`create ${o.apiKeyFile} first: umask 077; openssl rand -hex 32 > ${o.apiKeyFile}\n`);
        if (next.length) process.stdout.write(`then enable and start it:\n${next.map((c) => `  ${c}`).join('\n')}\n`);
      }
    });
}
