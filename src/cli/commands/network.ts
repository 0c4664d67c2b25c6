import type { Command } from 'commander';
import { CordonError } from '../../errors/registry.js';
import { client, printJson, table } from '../output.js';

// `cordon network allow|deny|rm|show ID …`: a running sandbox's egress rules, through
// POST /v1/sandboxes/:id/network/allow-list and GET /v1/sandboxes/:id/network.

type View = Record<string, unknown> & { mode?: string; allow_hosts?: string[]; deny_hosts?: string[] };

function show(v: View, json?: boolean): void {
  if (json) return printJson(v);
  const list = (xs: unknown) => ((xs as string[] | undefined)?.length ? (xs as string[]).join(', ') : '-');
  const rows = [
    ['MODE', String(v.mode ?? 'none')],
    ['ALLOW', list(v.allow_hosts)],
    ['DENY', list(v.deny_hosts)],
  ];
  if (v.mode !== 'none') {
    rows.push(['ADD-HOSTS', list((v.add_hosts as { host: string; ip: string }[] | undefined)?.map((h) => `${h.host}:${h.ip}`))]);
    rows.push(['SECRETS', list((v.secrets as { name: string; hosts: string[] }[] | undefined)?.map((s) => `${s.name}@${s.hosts.join(',')}`))]);
    rows.push(['RULES', String(v.rules ?? 0)]);
  }
  rows.push(['PORTS', list((v.ports as { address: string; local_port: number; remote_port: number }[] | undefined)?.map((p) => `${p.address}:${p.local_port}->${p.remote_port}`))]);
  console.log(table(rows));
}

export function registerNetwork(program: Command): void {
  const net = program.command('network').description("change or show a sandbox's egress rules while it runs");
  const change = (name: string, description: string, key: 'add' | 'deny' | 'delete') =>
    net
      .command(name)
      .description(description)
      .argument('<id>')
      .argument('<pattern...>', 'host globs (api.example.com, *.example.com), IPv4 addresses or CIDRs, optionally :port')
      .option('--json', 'print the resulting network as JSON')
      .action(async (id: string, patterns: string[], o: { json?: boolean }) => show((await client().sandbox(id).changeNetwork({ [key]: patterns })) as View, o.json));
  change('allow', 'add entries to the allow-list (an allowlist or open sandbox)', 'add');
  change('deny', 'add deny entries (they win over allow entries and over open mode)', 'deny');
  change('rm', 'remove entries from the allow-list and the deny-list', 'delete');
  net
    .command('show')
    .description('mode, allow and deny entries, add-hosts, secrets (names only), rules and ports')
    .argument('<id>')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => show((await client().sandbox(id).network()) as View, o.json));
}

type Port = { address: string; local_port: number; remote_port: number };
const portRows = (ps: Port[]) => table([['LOCAL', 'REMOTE'], ...ps.map((p) => [`${p.address}:${p.local_port}`, String(p.remote_port)])]);

/** `cordon port add|rm|ls ID …`: port forwards of a (running) sandbox, through /v1/sandboxes/:id/ports. */
export function registerPort(program: Command): void {
  const port = program.command('port').description("add, remove or list a sandbox's port forwards (host 127.0.0.1:LOCAL -> sandbox REMOTE) while it runs");
  port
    .command('add')
    .description('forward host port LOCAL (default: REMOTE) to port REMOTE in the sandbox')
    .argument('<id>')
    .argument('<spec>', '[LOCAL:]REMOTE')
    .option('--host <ip>', 'host address to bind (default 127.0.0.1)')
    .option('--json', 'print the forward as JSON')
    .action(async (id: string, spec: string, o: { host?: string; json?: boolean }) => {
      const m = /^(?:(\d{1,5}):)?(\d{1,5})$/.exec(spec);
      if (!m) throw new CordonError('invalid_argument', `port: ${spec} must look like [LOCAL:]REMOTE`);
      const f = await client().sandbox(id).addPort({ ...(m[1] ? { local: Number(m[1]) } : {}), remote: Number(m[2]), ...(o.host ? { host: o.host } : {}) });
      if (o.json) return printJson(f);
      console.log(portRows([f]));
    });
  port
    .command('rm')
    .description('remove the forward on host port LOCAL')
    .argument('<id>')
    .argument('<local>', 'the host port')
    .option('--json', 'print the removed forward as JSON')
    .action(async (id: string, local: string, o: { json?: boolean }) => {
      if (!/^\d{1,5}$/.test(local)) throw new CordonError('invalid_argument', `port: ${local} is not a port number`);
      const f = await client().sandbox(id).removePort(Number(local));
      if (o.json) return printJson(f);
      console.log(`removed ${f.address}:${f.local_port} -> ${f.remote_port}`);
    });
  port
    .command('ls')
    .description('list the port forwards')
    .argument('<id>')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const ps = await client().sandbox(id).ports();
      if (o.json) return printJson(ps);
      console.log(portRows(ps));
    });
}
