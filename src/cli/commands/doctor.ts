import type { Command } from 'commander';
import { RUNTIME_NAMES, type RuntimeName } from '../../config.js';
import type { CheckResult } from '../../doctor/index.js';
import { parseDuration, parseSize } from '../../util/units.js';
import { printJson } from '../output.js';

const MARK = { ok: '✔', warn: '!', fail: '✖' } as const;

function line(r: CheckResult): string {
  const head = `${MARK[r.status]} ${r.name.padEnd(24)} ${r.detail}`;
  return r.fix ? `${head}\n  ${' '.repeat(24)} fix: ${r.fix}` : head;
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check this host for running the daemon (no daemon needed); exit 0 only when every required check passes')
    .option('--runtime <name>', `the daemon's default runtime, which must work (${RUNTIME_NAMES.join('|')}); the others are only warned about`, 'runsc')
    .option('--runtime-binary <name=path>', 'check this binary for a runtime instead of the one on PATH (repeatable)', (v: string, p: string[] = []) => [...p, v], [])
    .option('--runsc-platform <name>', 'gVisor platform: systrap or ptrace', 'systrap')
    .option('--data-dir <dir>', 'the data directory whose free space is checked', '/var/lib/cordon')
    .option('--min-free-disk <size>', 'free space the data directory needs', '2g')
    .option('--egress-interface <iface>', 'check the interface sandbox egress would leave through (nftables becomes required)')
    .option('--agent-binary <path>', 'the agent binary the daemon would inject')
    .option('--timeout <duration>', 'deadline of each runtime sandbox start', '60s')
    .option('--json', 'print {ok, checks:[{name, status, required, detail, fix}]}')
    .action(async (o) => {
      if (!RUNTIME_NAMES.includes(o.runtime)) throw new Error(`--runtime must be one of ${RUNTIME_NAMES.join(', ')}, got ${o.runtime}`);
      if (o.runscPlatform !== 'systrap' && o.runscPlatform !== 'ptrace') throw new Error(`--runsc-platform must be systrap or ptrace, got ${o.runscPlatform}`);
      const runtimeBinaries: Partial<Record<RuntimeName, string>> = {};
      for (const item of o.runtimeBinary as string[]) {
        const m = /^([a-z]+)=(\/.+)$/.exec(item);
        if (!m || !RUNTIME_NAMES.includes(m[1] as RuntimeName)) throw new Error(`--runtime-binary must look like crun=/usr/local/bin/crun, got ${item}`);
        runtimeBinaries[m[1] as RuntimeName] = m[2];
      }
      const minFree = parseSize(o.minFreeDisk);
      if (minFree === undefined) throw new Error(`--min-free-disk must be a size such as 2g, got ${o.minFreeDisk}`);
      const timeout = parseDuration(o.timeout);
      if (!timeout || timeout < 1000) throw new Error(`--timeout must be a duration of at least 1s, got ${o.timeout}`);
      const { runDoctor } = await import('../../doctor/index.js');
      const result = await runDoctor({
        runtime: o.runtime,
        runtimeBinaries,
        runscPlatform: o.runscPlatform,
        dataDir: o.dataDir,
        minFreeBytes: minFree,
        egressInterface: o.egressInterface,
        runtimeTimeoutMs: timeout,
        agentBinary: o.agentBinary,
        onResult: o.json ? undefined : (r) => process.stdout.write(`${line(r)}\n`),
      });
      if (o.json) printJson(result);
      else {
        const failed = result.checks.filter((c) => c.status === 'fail').map((c) => c.name);
        const warned = result.checks.filter((c) => c.status === 'warn').length;
        process.stdout.write(result.ok ? `\nthis host can run cordon${warned ? ` (${warned} warning${warned > 1 ? 's' : ''})` : ''}\n` : `\nnot ready: ${failed.join(', ')} failed\n`);
      }
      process.exitCode = result.ok ? 0 : 1;
    });
}
