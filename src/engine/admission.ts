import { readFile } from 'node:fs/promises';
import type { DaemonConfig } from '../config.js';
import { CordonError } from '../errors/registry.js';
import { NO_TELEMETRY, type RefusalReason, type Telemetry } from '../telemetry/telemetry.js';
import { formatBytes } from '../util/units.js';

// Retry-After values (seconds). The E2B SDK retries a 429 that carries one (three times, within its
// request timeout) and surfaces a 503 as ServiceBusyError at once, so a brief wait is a 429 and a
// host that needs time to calm down is a 503.
const RETRY_QUEUE_S = 1;
const RETRY_CAP_S = 5;
const RETRY_CPU_S = 5;
const RETRY_MEMORY_S = 10;

export async function hostMemAvailable(): Promise<number> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : Number.MAX_SAFE_INTEGER;
}

/** PSI cpu "some avg10" in percent, or undefined where the kernel or container has no PSI. */
export async function hostCpuPressure(path = '/proc/pressure/cpu'): Promise<number | undefined> {
  try {
    const m = /^some avg10=(\d+(?:\.\d+)?)/m.exec(await readFile(path, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Refuse (503) when the host has less memory available than the configured floor. */
export async function admitMemory(minHostMemory: number, memAvailable: () => Promise<number> = hostMemAvailable): Promise<void> {
  const avail = await memAvailable();
  if (avail < minHostMemory) {
    throw new CordonError(
      'insufficient_resources',
      `host memory is critically low (${formatBytes(avail)} available, ${formatBytes(minHostMemory)} required); stop sandboxes or retry later`,
      { available_bytes: avail, retry_after_s: RETRY_MEMORY_S },
    );
  }
}

/** Refuse (503) while the CPU is saturated; a host without PSI (undefined) is not judged. */
export async function admitCpu(maxPressure: number, pressure: () => Promise<number | undefined> = hostCpuPressure): Promise<void> {
  if (maxPressure <= 0) return;
  const p = await pressure();
  if (p !== undefined && p >= maxPressure) {
    throw new CordonError(
      'insufficient_resources',
      `the host CPU is saturated (tasks waited for CPU ${p}% of the last 10 s, limit ${maxPressure}%); retry in a few seconds, or remove idle sandboxes`,
      { cpu_pressure: p, max_cpu_pressure: maxPressure, retry_after_s: RETRY_CPU_S },
    );
  }
}

/**
 * Refuse (429) past the sandbox cap. Synchronous on purpose: the caller counts and inserts the new
 * record without yielding in between, so concurrent creates cannot all slip under the cap.
 */
export function admitCount(live: number, max: number): void {
  if (live >= max) {
    throw new CordonError(
      'too_many_sandboxes',
      `this daemon already runs ${live} sandboxes (limit ${max}); remove some or start the daemon with a higher --max-sandboxes`,
      { live, max, retry_after_s: RETRY_CAP_S },
    );
  }
}

/**
 * Creates are CPU heavy (runtime start-up, overlay mounts), so only a few run at once; the rest wait
 * in a bounded FIFO, and a create that finds the queue full is refused (429) instead of piling up.
 */
export class CreateSlots {
  private active = 0;
  private readonly waitingList: (() => void)[] = [];
  constructor(
    private readonly max: number,
    private readonly queue: number,
  ) {}

  /** Creates waiting for a slot now (a warm pool holds its refill back while users wait). */
  get waiting(): number {
    return this.waitingList.length;
  }

  /** Wait for a slot; the returned function gives it back (calling it twice is harmless). */
  async acquire(): Promise<() => void> {
    if (this.active >= this.max) {
      if (this.waitingList.length >= this.queue) {
        throw new CordonError(
          'rate_limited',
          `${this.active} sandboxes are being created and ${this.waitingList.length} more wait; retry in a moment (the daemon's --max-concurrent-creates and --create-queue set these)`,
          { creating: this.active, queued: this.waitingList.length, retry_after_s: RETRY_QUEUE_S },
        );
      }
      await new Promise<void>((resolve) => this.waitingList.push(resolve));
    } else {
      this.active++;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waitingList.shift();
      // The slot passes straight to the next waiter, so `active` only drops when nobody waits.
      if (next) next();
      else this.active--;
    };
  }
}

/** Everything a create must pass before it may use the host: slot, memory, CPU pressure, count. */
export class Admission {
  readonly slots: CreateSlots;
  constructor(
    private readonly cfg: Pick<DaemonConfig, 'maxSandboxes' | 'maxConcurrentCreates' | 'createQueue' | 'maxCpuPressure' | 'minHostMemoryBytes'>,
    private readonly probes: { memory?: () => Promise<number>; cpu?: () => Promise<number | undefined> } = {},
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {
    this.slots = new CreateSlots(cfg.maxConcurrentCreates, cfg.createQueue);
  }

  /** Count a refusal by its reason, then pass it on. */
  private async counted<T>(reason: RefusalReason, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      this.telemetry.admissionRefused(reason);
      throw e;
    }
  }

  /** Host checks, quick to refuse before a create waits for a slot. */
  async checkHost(): Promise<void> {
    await this.counted('cpu_pressure', () => admitCpu(this.cfg.maxCpuPressure, this.probes.cpu));
    await this.counted('host_memory', () => admitMemory(this.cfg.minHostMemoryBytes, this.probes.memory));
  }

  /** Take a create slot and re-check the host after any wait; call `countAndInsert` without yielding. */
  async enter(): Promise<() => void> {
    await this.checkHost();
    const release = await this.counted('create_queue_full', () => this.slots.acquire());
    try {
      await this.checkHost();
    } catch (e) {
      release();
      throw e;
    }
    return release;
  }

  admitCount(live: number): void {
    try {
      admitCount(live, this.cfg.maxSandboxes);
    } catch (e) {
      this.telemetry.admissionRefused('max_sandboxes');
      throw e;
    }
  }
}
