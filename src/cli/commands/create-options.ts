import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { CordonError } from '../../errors/registry.js';
import type { CreateOptions } from '../../sdk/types.js';
import { collect, envFrom } from '../output.js';
import { networkOptionsFrom } from './network-options.js';
import { parseMountFlag, parseVolumeFlag } from './volume.js';
import { parseS3SyncFlag, readS3SyncFile } from './s3.js';

/** Flags shared by `run` and `create`, docker-style. */
export function addCreateOptions(cmd: Command): Command {
  return cmd
    .option('--template <name>', 'template to start from', undefined)
    .option('--snapshot <name|id>', 'start from this snapshot (runsc: its memory and processes too; crun/runc: its files)')
    .option('--image <ref>', 'OCI image to start from')
    .option('--pull <policy>', 'image pull policy: missing (default), always, never')
    .option('--entrypoint <cmd>', "override the image's Entrypoint ('' clears it)")
    .option('--runtime <name>', 'runsc (gVisor, default), crun or runc')
    .option('--memory <size>', 'memory limit, e.g. 128m')
    .option('--cpus <n>', 'CPU limit in cores, e.g. 0.5')
    .option('--pids <n>', 'process limit')
    .option('--disk <size>', 'disk limit for the writable layer, e.g. 1g')
    .option('--timeout <duration>', 'remove the sandbox after this long, e.g. 60s')
    .option('--on-timeout <action>', 'what the timeout does: kill (remove, default), pause or stop')
    .option('--no-idle-pause', 'never pause this sandbox for idleness (serve --idle-pause)')
    .option('-e, --env <K=V>', 'environment variable (repeatable)', collect, [])
    .option('--env-file <file>', 'read environment variables from a file')
    .option('-w, --workdir <dir>', 'working directory')
    .option('-u, --user <user>', 'user to run as (name, uid or uid:gid)')
    .option('-l, --label <k=v>', 'label (repeatable)', collect, [])
    .option('--read-only', 'mount the root filesystem read-only')
    .option('--tmpfs <path[:size]>', 'mount a tmpfs (repeatable)', collect, [])
    .option('-v, --volume <NAME:/path[:ro]>', 'mount a named volume (repeatable; cordon volume create NAME first)', collect, [])
    .option('--s3-sync <spec>', 'bucket=B,prefix=P,path=/work,mode=hooks|on_demand|mount,credentials=NAME[,endpoint=URL][,region=R][,path-style][,max-file-size=5g][,readonly] (repeatable; credentials from cordon s3 credentials add)', collect, [])
    .option('--s3-sync-file <file>', 'JSON file with S3 syncs (one object or an array, fields as the REST s3_sync)')
    .option('--mount <spec>', 'type=bind|overlay|tmpfs,source=HOSTDIR,target=/path[,readonly][,tmpfs-size=64m] (repeatable; host dirs only under cordon serve --allow-mount-root)', collect, [])
    .option('--file-rule <ACTION:OPS:GLOB>', 'file rule on a mount or volume, e.g. block:write,create,remove,rename:/data/**/*.env (ops: read, write, create, remove, rename, chmod, chown, list, *; first match decides; repeatable)', collect, [])
    .option('--file-events <path>', 'report file operations under this path (in a mount or volume) as file events (repeatable)', collect, [])
    .option('--hostname <name>', 'hostname inside the sandbox')
    .option('--no-new-privileges', 'setuid binaries (sudo) and file capabilities grant nothing inside')
    .option('--network <mode>', 'none (default), allowlist or open')
    .option('--allow-host <pattern>', 'allow egress to this host glob, IP or CIDR, optionally :port (repeatable; implies allowlist)', collect, [])
    .option('--deny-host <pattern>', 'deny egress to this host glob, IP or CIDR (repeatable; wins over allows)', collect, [])
    .option('--add-host <name:ip>', 'resolve NAME to IP inside the sandbox (repeatable)', collect, [])
    .option('--secret <NAME[=VALUE]@HOSTS>', 'secret the sandbox sees as a placeholder, sent only to HOSTS; without =VALUE the daemon variable NAME, if cordon serve --secret-env NAME allows it (repeatable)', collect, [])
    .option('--dns-server <ip>', 'upstream DNS server for this sandbox (repeatable)', collect, [])
    .option('--mtu <n>', 'MTU of the sandbox interface')
    .option('-p, --publish <[LOCAL:]REMOTE>', 'forward 127.0.0.1:LOCAL to the sandbox port REMOTE (repeatable)', collect, []);
}

export function createOptionsFrom(o: Record<string, unknown>): CreateOptions {
  const labels: Record<string, string> = {};
  for (const l of (o.label as string[]) ?? []) {
    const i = l.indexOf('=');
    if (i <= 0) throw new CordonError('invalid_argument', `--label "${l}" must look like key=value`);
    labels[l.slice(0, i)] = l.slice(i + 1);
  }
  const num = (v: unknown, flag: string) => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new CordonError('invalid_argument', `${flag} must be a number, got ${v}`);
    return n;
  };
  return {
    snapshot: o.snapshot as string | undefined,
    template: o.template as string | undefined,
    image: o.image as string | undefined,
    pull_policy: o.pull as CreateOptions['pull_policy'],
    entrypoint: o.entrypoint === undefined ? undefined : o.entrypoint === '' ? [] : [o.entrypoint as string],
    runtime: o.runtime as CreateOptions['runtime'],
    memory: o.memory as string | undefined,
    cpus: num(o.cpus, '--cpus'),
    pids: num(o.pids, '--pids'),
    disk: o.disk as string | undefined,
    timeout: o.timeout as string | undefined,
    on_timeout: o.onTimeout as CreateOptions['on_timeout'],
    idle_pause: o.idlePause === false ? false : undefined,
    env: envFrom(o.env as string[], o.envFile as string | undefined, (p) => readFileSync(p, 'utf8')),
    workdir: o.workdir as string | undefined,
    user: o.user as string | undefined,
    labels,
    read_only_rootfs: o.readOnly ? true : undefined,
    tmpfs: ((o.tmpfs as string[]) ?? []).map((t) => {
      const [path, size] = t.split(':');
      return { path, size };
    }),
    volumes: ((o.volume as string[]) ?? []).map(parseVolumeFlag),
    mounts: ((o.mount as string[]) ?? []).map(parseMountFlag),
    file_rules: ((o.fileRule as string[]) ?? []).map(parseFileRuleFlag),
    file_events: (o.fileEvents as string[]) ?? [],
    s3_sync: [...((o.s3Sync as string[]) ?? []).map(parseS3SyncFlag), ...(o.s3SyncFile ? readS3SyncFile(o.s3SyncFile as string) : [])],
    hostname: o.hostname as string | undefined,
    no_new_privileges: o.newPrivileges === false ? true : undefined,
    network: networkOptionsFrom(o),
  };
}

/** --file-rule ACTION:OPS:GLOB (OPS comma-separated, or empty / * for all): the glob may itself hold colons. */
export function parseFileRuleFlag(v: string): NonNullable<CreateOptions['file_rules']>[number] {
  const m = /^(allow|block):([a-z*,]*):(\/.*)$/.exec(v);
  if (!m) throw new CordonError('invalid_argument', `--file-rule "${v}" must look like block:write,create:/data/**/*.env (ACTION allow|block, OPS comma-separated, then an absolute glob)`);
  const ops = m[2].split(',').filter(Boolean) as NonNullable<NonNullable<CreateOptions['file_rules']>[number]['ops']>;
  return { action: m[1] as 'allow' | 'block', ops, path: m[3] };
}
