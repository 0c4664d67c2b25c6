import { CordonError, exitCodeFor } from '../errors/registry.js';
import { Cordon } from '../sdk/client.js';

export function client(): Cordon {
  return new Cordon();
}

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n');
}

/** Print an error the way scripts and people can both use, and exit with its registry code. */
export function reportError(e: unknown, json: boolean): never {
  const code = e instanceof CordonError ? e.code : (e as { code?: string }).code;
  const message = (e as Error).message ?? String(e);
  if (json) process.stdout.write(`${JSON.stringify({ error: { code: code ?? 'internal', message } })}\n`);
  else process.stderr.write(`cordon: ${message}\n`);
  const exit = e instanceof CordonError ? e.exitCode : typeof code === 'string' && code.startsWith('commander.') ? 64 : exitCodeFor(code);
  process.exit(exit);
}

/** Parse repeated -e K=V options and an --env-file into one map; `-e K` takes K from our environment. */
export function envFrom(pairs: string[] = [], envFile?: string, readFile?: (p: string) => string): Record<string, string> {
  const env: Record<string, string> = {};
  const add = (line: string, where: string) => {
    const t = line.trim();
    if (!t || t.startsWith('#')) return;
    const i = t.indexOf('=');
    if (i < 0) {
      if (process.env[t] !== undefined) env[t] = process.env[t]!;
      return;
    }
    if (i === 0) throw new CordonError('invalid_argument', `${where}: "${t}" must look like NAME=VALUE`);
    env[t.slice(0, i)] = t.slice(i + 1);
  };
  if (envFile && readFile) for (const l of readFile(envFile).split('\n')) add(l, envFile);
  for (const p of pairs) add(p, '-e');
  return env;
}

export const collect = (v: string, prev: string[] = []) => [...prev, v];
