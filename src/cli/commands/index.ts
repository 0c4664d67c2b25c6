import type { Command } from 'commander';
import { registerCp } from './cp.js';
import { registerDoctor } from './doctor.js';
import { registerService } from './service.js';
import { registerImage } from './image.js';
import { registerLifecycle } from './lifecycle.js';
import { registerNetwork, registerPort } from './network.js';
import { registerRunExec } from './run-exec.js';
import { registerTemplate } from './template.js';
import { registerVolume } from './volume.js';
import { registerSnapshot } from './snapshot.js';
import { registerMcp } from './mcp.js';

export function registerCommands(program: Command): void {
  program.enablePositionalOptions();
  registerLifecycle(program);
  registerRunExec(program);
  registerCp(program);
  registerImage(program);
  registerNetwork(program);
  registerPort(program);
  registerDoctor(program);
  registerService(program);
  registerTemplate(program);
  registerVolume(program);
  registerSnapshot(program);
  registerMcp(program);
}
