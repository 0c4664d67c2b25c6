// Sandbox.create() → first commands.run('true') through the official e2b SDK, side by side with the
// same flow through cordon's own SDK, against one daemon in the same run. Runs alternate so both
// see the same machine state. BENCH_RUNS (default 50) sets the count per client.
import { Sandbox as E2bSandbox } from 'e2b';
import { startDaemon } from '../test/helpers/daemon.js';
import { pct, ratio, row } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 50);

async function main() {
  const d = await startDaemon('bench-e2b');
  // Loopback only: the SDK must never reach e2b.app.
  const o = { apiKey: 'e2b_bench', apiUrl: d.url, sandboxUrl: d.url, domain: 'cordon.invalid', timeoutMs: 120_000 };
  const e2b: number[] = [];
  const native: number[] = [];
  try {
    // One warm-up of each so first-use costs (template cache, JIT) are not counted.
    await (await E2bSandbox.create('base', o)).kill();
    await (await d.client.create({ template: 'base' })).remove({ force: true });
    for (let i = 0; i < RUNS; i++) {
      let t = performance.now();
      const sb = await E2bSandbox.create('base', o);
      await sb.commands.run('true');
      e2b.push(performance.now() - t);
      await sb.kill();

      t = performance.now();
      const c = await d.client.create({ template: 'base', timeout: 120 });
      const r = await c.exec(['/bin/bash', '-l', '-c', 'true'], { user: 'user' });
      native.push(performance.now() - t);
      if (r.exit_code !== 0) throw new Error(`cordon exec failed: ${JSON.stringify(r)}`);
      await c.remove({ force: true });
      if ((i + 1) % 10 === 0) process.stderr.write(`  ${i + 1}/${RUNS}\n`);
    }
  } finally {
    await d.cleanup();
  }
  console.log(`create → first run('true'), ${RUNS} runs each, daemon default runtime`);
  console.log(row('e2b SDK → cordon', e2b));
  console.log(row('cordon SDK → cordon', native));
  console.log(`ratio e2b/cordon: ${ratio(e2b, native)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
