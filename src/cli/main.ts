import { Command } from 'commander';
import { VERSION } from '../version.js';
import { registerServe } from './serve.js';
import { registerCommands } from './commands/index.js';
import { reportError } from './output.js';

export async function main(argv: string[]): Promise<void> {
  const program = new Command();
  program.name('cordon').description('Sandboxes for AI agents and untrusted code').version(VERSION).showHelpAfterError();
  registerServe(program);
  registerCommands(program);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    reportError(e, argv.includes('--json'));
  }
}
