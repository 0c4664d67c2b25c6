import type { Command } from 'commander';
import { registerCp } from './cp.js';
import { registerImage } from './image.js';
import { registerLifecycle } from './lifecycle.js';
import { registerNetwork, registerPort } from './network.js';
import { registerRunExec } from './run-exec.js';
import { registerTemplate } from './template.js';

export function registerCommands(program: Command): void {
  program.enablePositionalOptions();
  registerLifecycle(program);
  registerRunExec(program);
  registerCp(program);
  registerImage(program);
  registerNetwork(program);
  registerPort(program);
  registerTemplate(program);
}
