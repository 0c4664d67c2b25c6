import { dataPaths, type DaemonConfig, type RuntimeName } from '../config.js';
import { CrunRuntime, RuncRuntime } from './crun.js';
import { RunscRuntime } from './runsc.js';
import type { Runtime } from './types.js';

/** The runtimes this daemon offers, built once from its config. */
export function createRuntimes(cfg: DaemonConfig): Map<RuntimeName, Runtime> {
  const p = dataPaths(cfg.dataDir);
  const calls = (rt: RuntimeName) => ({ timeoutMs: cfg.runtimeTimeoutMs, binary: cfg.runtimeBinaries?.[rt] });
  return new Map<RuntimeName, Runtime>([
    ['runsc', new RunscRuntime(p.runtimeRoot('runsc'), calls('runsc'), cfg.runscPlatform)],
    ['crun', new CrunRuntime(p.runtimeRoot('crun'), calls('crun'))],
    ['runc', new RuncRuntime(p.runtimeRoot('runc'), calls('runc'))],
  ]);
}
