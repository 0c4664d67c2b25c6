import type { S3SyncSpec } from '../s3/sync-spec.js';
import type { SyncReport } from '../engine/s3-transfer.js';
import { networkView } from '../net/schema.js';
import type { ExecResult, SandboxStats } from '../engine/live-sandbox.js';
import type { ProcessInfo } from '../engine/process-manager.js';
import type { SandboxEvent, SandboxRecord } from '../engine/types.js';
import type { FileEntry } from '../engine/files.js';

// The JSON shapes of the /v1 API (snake_case, as in Den's runtime types).

const iso = (ms?: number) => (ms ? new Date(ms).toISOString() : null);

export function sandboxView(r: SandboxRecord) {
  const s = r.spec;
  return {
    id: r.id,
    state: r.state,
    state_reason: r.stateReason ?? null,
    runtime: r.runtime,
    template: s.template ?? null,
    image: s.image ?? null,
    snapshot: s.snapshot ?? null,
    labels: r.labels,
    created_at: iso(r.createdAt),
    started_at: iso(r.startedAt),
    expires_at: iso(r.expiresAt),
    config: {
      env: s.env,
      workdir: s.workdir ?? null,
      cmd: s.cmd ?? null,
      user: s.user ?? null,
      cpus: s.cpus ?? null,
      memory: s.memoryBytes,
      pids: s.pids,
      disk: s.diskBytes ?? null,
      timeout_ms: s.timeoutMs,
      on_timeout: s.onTimeout ?? 'kill',
      idle_pause: s.idlePause ?? true,
      read_only_rootfs: s.readOnlyRootfs,
      tmpfs: s.tmpfs.map((t) => ({ path: t.path, size: t.sizeBytes, options: t.options ?? [] })),
      volumes: (s.volumes ?? []).map((v) => ({ name: v.name, id: v.volumeId, path: v.path, read_only: v.readOnly })),
      mounts: (s.mounts ?? []).map((m) => ({ type: m.type, source: m.source, target: m.target, read_only: m.readOnly })),
      file_rules: (s.fileRules ?? []).map((r) => ({ action: r.action, ops: r.ops, path: r.path })),
      file_events: s.fileEvents ?? [],
      s3_sync: (s.s3Sync ?? []).map(s3SyncView),
      hostname: s.hostname ?? null,
      no_new_privileges: !!s.noNewPrivileges,
    },
    network: networkView(s.network),
  };
}

export function execView(r: ExecResult) {
  return {
    exit_code: r.exitCode,
    stdout: r.stdout,
    stderr: r.stderr,
    duration_ms: r.durationMs,
    timed_out: r.timedOut,
    oom_killed: r.oomKilled,
    truncated: r.truncated,
  };
}

export function processView(p: ProcessInfo) {
  return {
    id: p.id,
    pid: p.pid,
    tag: p.tag ?? null,
    cmd: p.cmd,
    cwd: p.cwd,
    user: p.user,
    pty: p.pty,
    running: p.running,
    stdin_open: p.stdinOpen,
    started_at: iso(p.startedAt),
    exited_at: iso(p.exitedAt),
    exit_code: p.exitCode ?? null,
  };
}

export function statsView(s: SandboxStats) {
  return {
    cpu_percent: s.cpuPercent,
    memory_usage: s.memoryUsageBytes,
    memory_limit: s.memoryLimitBytes,
    memory_percent: s.memoryPercent,
    pid_count: s.pids,
    network_rx: s.networkRxBytes,
    network_tx: s.networkTxBytes,
    disk_read: s.diskReadBytes,
    disk_write: s.diskWriteBytes,
    oom_kills: s.oomKills,
    timestamp: s.timestamp,
  };
}

export function fileView(f: FileEntry) {
  return {
    name: f.name,
    path: f.path,
    type: f.type,
    size: f.size,
    mode: f.mode,
    permissions: f.permissions,
    owner: f.owner,
    group: f.group,
    modified_at: f.modifiedAt,
    symlink_target: f.symlinkTarget ?? null,
  };
}

export function eventView(e: SandboxEvent) {
  return { seq: e.seq, ts: new Date(e.ts).toISOString(), type: e.type, message: e.message, data: e.data ?? null };
}

/** An S3 sync as the API shows it: the credentials by name only. */
export function s3SyncView(s: S3SyncSpec) {
  return {
    bucket: s.bucket,
    prefix: s.prefix,
    path: s.path,
    mode: s.mode,
    endpoint: s.endpoint ?? null,
    region: s.region,
    credentials: s.credentials,
    path_style: s.pathStyle,
    max_file_size: s.maxFileBytes,
    read_only: !!s.readOnly,
  };
}

/** One direction of one sync, as the sync call answers it. */
export function syncReportView(r: SyncReport) {
  return {
    direction: r.direction,
    bucket: r.bucket,
    prefix: r.prefix,
    path: r.path,
    files: r.files,
    bytes: r.bytes,
    deleted: r.deleted,
    unchanged: r.unchanged,
    skipped: r.skipped,
    conflicts: r.conflicts,
    failed: r.failed,
    complete: r.complete,
    duration_ms: r.durationMs,
  };
}
