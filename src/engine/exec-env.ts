import type { ResolvedUser } from './users.js';
import type { SandboxSpec, ImageConfig } from './types.js';

const envMap = (list: string[]) => Object.fromEntries(list.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]));

/** Environment of a process: image defaults < HOME/USER of the user < sandbox env < per-command env. */
export function composeEnv(image: ImageConfig, spec: SandboxSpec, user: ResolvedUser, extra: Record<string, string> = {}): string[] {
  const env: Record<string, string> = {
    ...envMap(image.env.filter((e) => e.includes('='))),
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    HOSTNAME: spec.hostname ?? '',
    ...spec.env,
    ...extra,
  };
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

/** Docker's rule: user arguments replace Cmd; Entrypoint stays unless overridden. */
export function composeCommand(image: ImageConfig, entrypoint: string[] | undefined, cmd: string[] | undefined): string[] {
  const ep = entrypoint ?? image.entrypoint ?? [];
  const args = cmd && cmd.length ? cmd : entrypoint ? [] : (image.cmd ?? []);
  return [...ep, ...args];
}
