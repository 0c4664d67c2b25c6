// The official E2B SDK building a 3-step template (copy, runCmd, runCmd on base) against cordon: cold
// (skipCache: every step in a sandbox) and cached (uploads skipped, no sandbox), side by side with
// cordon's own Dockerfile build of the same steps in the same run (the SDK's overhead: the extra
// requests, the upload, the status polling). Prints p50/p90/p99 and ratios.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Template } from 'e2b';
import tar from 'tar-stream';
import { startDaemon } from '../test/helpers/daemon.js';
import { ratio, rowTail } from './lib/stats.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const CONTENT = 'cordon '.repeat(10_000);
const DOCKERFILE = 'FROM base\nCOPY app.txt /opt/app/app.txt\nRUN wc -c /opt/app/app.txt > /opt/app/size.txt\nRUN echo built > /opt/app/done.txt\n';

function contextTar(): Readable {
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, DOCKERFILE);
  pack.entry({ name: 'app.txt' }, CONTENT);
  pack.finalize();
  return pack;
}

async function main() {
  const d = await startDaemon('bench-e2b-template');
  const work = mkdtempSync('/var/lib/cordon-test/bench-e2b-tmpl-');
  const o = { apiKey: 'e2b_bench', apiUrl: d.url, domain: 'cordon.invalid' };
  try {
    writeFileSync(join(work, 'app.txt'), CONTENT);
    const steps = () =>
      Template({ fileContextPath: work }).fromTemplate('base').setUser('root').copy('app.txt', '/opt/app/app.txt').runCmd('wc -c /opt/app/app.txt > /opt/app/size.txt').runCmd('echo built > /opt/app/done.txt');
    const sdk = async (cold: boolean) => {
      const t = performance.now();
      await Template.build(steps(), 'bench-e2b-3step', { ...o, skipCache: cold });
      return performance.now() - t;
    };
    const native = async (cold: boolean) => {
      const t = performance.now();
      await d.client.templates.build('bench-native-3step', contextTar(), { noCache: cold });
      return performance.now() - t;
    };
    console.log(`E2B SDK template build benchmark: 3 steps (copy, runCmd, runCmd) on base, ${RUNS} runs per figure, ${new Date().toISOString()}`);
    await sdk(true); // warm-up: base, page cache
    await native(true);
    const f = { sdkCold: [] as number[], sdkCached: [] as number[], nativeCold: [] as number[], nativeCached: [] as number[] };
    for (let i = 0; i < RUNS; i++) {
      f.sdkCold.push(await sdk(true));
      f.sdkCached.push(await sdk(false));
      f.nativeCold.push(await native(true));
      f.nativeCached.push(await native(false));
    }
    console.log(rowTail('E2B SDK Template.build, cold (skipCache)', f.sdkCold));
    console.log(rowTail('E2B SDK Template.build, cached', f.sdkCached));
    console.log(rowTail('cordon template build, cold (--no-cache)', f.nativeCold));
    console.log(rowTail('cordon template build, cached', f.nativeCached));
    console.log(`SDK / native, cold:   ${ratio(f.sdkCold, f.nativeCold)}`);
    console.log(`SDK / native, cached: ${ratio(f.sdkCached, f.nativeCached)}`);
    console.log(`SDK cold / cached:    ${ratio(f.sdkCold, f.sdkCached)}`);
    await d.client.templates.remove('bench-native-3step');
    await d.client.templates.remove('bench-e2b-3step');
  } finally {
    await d.cleanup();
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
