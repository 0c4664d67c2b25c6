/** One finding of `cordon doctor`. */
export interface CheckResult {
  /** Short name, e.g. "runtime runsc", "cgroups", "disk". */
  name: string;
  status: 'ok' | 'warn' | 'fail';
  /** Whether the daemon cannot work right without it (a failed required check makes doctor exit 1). */
  required: boolean;
  /** What was found. */
  detail: string;
  /** What to do about it (absent when ok). */
  fix?: string;
}

export const ok = (name: string, detail: string, required = true): CheckResult => ({ name, status: 'ok', required, detail });
export const fail = (name: string, detail: string, fix: string, required = true): CheckResult => ({ name, status: required ? 'fail' : 'warn', required, detail, fix });
export const warn = (name: string, detail: string, fix: string): CheckResult => ({ name, status: 'warn', required: false, detail, fix });

/** The absolute path `name` resolves to on `PATH`, or undefined. */
export function onPath(name: string, path = process.env.PATH ?? '', exists: (p: string) => boolean): string | undefined {
  if (name.includes('/')) return exists(name) ? name : undefined;
  for (const dir of path.split(':')) if (dir && exists(`${dir}/${name}`)) return `${dir}/${name}`;
  return undefined;
}
