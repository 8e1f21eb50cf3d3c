/**
 * The `spook` command tree: what main.ts parses, and what tools/man.ts and tools/completion.ts
 * render into spook(8) and the shell completions, so help, manual and completion never differ.
 */
import { Command } from 'commander';
import { packageVersion } from '../drivers/daemon/build-info.js';
import { EXIT, EXIT_HELP, adminCommands, globalOptions } from './admin.js';
import { domainCommands } from './domain.js';
import { wrapCommands } from './wrap.js';
import { keyCommands } from './keys.js';
import { xdpCommands } from './xdp.js';
import { reloadCommands } from './reload.js';

/** The package's version (build-info finds package.json from the source tree or dist/ alike; no git). */
export const version = (): string => packageVersion();

export function spookProgram(): Command {
  const program = globalOptions(
    new Command().name('spook').description('Spook: deterministic shared state over UDP. Admin CLI.').version(version()),
  );
  for (const c of [...keyCommands(), ...adminCommands(), ...domainCommands(), ...wrapCommands(), ...xdpCommands(), ...reloadCommands()])
    program.addCommand(c);
  program.addHelpText('after', EXIT_HELP);
  usageExits(program, 'spook');
  return program;
}

/**
 * A wrong command line exits 2 (commander's own default is 1, the status of any other error), with
 * one line on stderr saying what and where to look: on every subcommand.
 */
function usageExits(c: Command, path: string): void {
  c.exitOverride((e) => process.exit(e.exitCode === 0 ? EXIT.ok : EXIT.usage));
  c.configureOutput({
    outputError: (msg, write) => write(`spook: ${msg.trim().replace(/^error: /, '')} (see: ${path} --help)\n`),
  });
  for (const sub of c.commands) usageExits(sub, `${path} ${sub.name()}`);
}
