// `cordon doctor`: is this host fit to run the daemon? Runs without a daemon; every finding that is
// not ok says what to do.
import { RUNTIME_NAMES, type RuntimeName } from '../config.js';
import type { CheckResult } from './check.js';
import { checkCgroups, checkDisk, checkEgress, checkFileGate, checkFiles, checkMmdebstrap, checkNamespaces, checkNftables, checkOverlay, checkPressure, checkTimeSync } from './host-checks.js';
import { checkRuntime } from './runtime-check.js';
import { fsgateBinary } from '../volume/file-gate.js';
import { BUILT_AGENT, BUILT_SUPERVISOR } from '../engine/agent/agent-setup.js';

export type { CheckResult } from './check.js';

export interface DoctorOptions {
  /** The daemon's default runtime: required. The others are checked and only warned about. */
  runtime: RuntimeName;
  runtimeBinaries: Partial<Record<RuntimeName, string>>;
  runscPlatform: 'systrap' | 'ptrace';
  dataDir: string;
  minFreeBytes: number;
  egressInterface?: string;
  runtimeTimeoutMs: number;
  agentBinary?: string;
  /** Called as each check finishes (progress for a person watching). */
  onResult?: (r: CheckResult) => void;
}


export async function runDoctor(o: DoctorOptions): Promise<{ ok: boolean; checks: CheckResult[] }> {
  const checks: CheckResult[] = [];
  const add = (r: CheckResult | CheckResult[] | undefined) => {
    for (const x of r === undefined ? [] : Array.isArray(r) ? r : [r]) {
      checks.push(x);
      o.onResult?.(x);
    }
  };
  add(checkFiles(o.agentBinary ?? BUILT_AGENT, BUILT_SUPERVISOR));
  add(checkFileGate(fsgateBinary()));
  add(checkOverlay());
  add(await checkCgroups());
  add(checkNamespaces());
  add(await checkNftables(o.egressInterface));
  add(checkPressure());
  add(await checkDisk(o.dataDir, o.minFreeBytes));
  add(await checkEgress(o.egressInterface));
  add(await checkTimeSync());
  add(await checkMmdebstrap());
  // The default runtime first; sandboxes are started one at a time (they are CPU heavy).
  for (const rt of [o.runtime, ...RUNTIME_NAMES.filter((r) => r !== o.runtime)]) {
    add(await checkRuntime({ runtime: rt, required: rt === o.runtime, binary: o.runtimeBinaries[rt], runscPlatform: o.runscPlatform, timeoutMs: o.runtimeTimeoutMs }));
  }
  return { ok: checks.every((c) => c.status !== 'fail'), checks };
}
