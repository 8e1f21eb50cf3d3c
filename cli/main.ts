/**
 * `spook`: the admin CLI. Every inspection command prints a table for people and
 * `--json` for scripts; errors name what is wrong and exit non-zero.
 */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { EXIT, EXIT_HELP, adminCommands, globalOptions } from './admin.js';
import { domainCommands } from './domain.js';
import { wrapCommands } from './wrap.js';
import { keyCommands } from './keys.js';
import { xdpCommands } from './xdp.js';

const pkg = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8')) as {
  version: string;
};

const program = globalOptions(
  new Command()
    .name('spook')
    .description('Spook: deterministic shared state over UDP. Admin CLI.')
    .version(pkg.version),
);

for (const c of [...keyCommands(), ...adminCommands(), ...domainCommands(), ...wrapCommands(), ...xdpCommands()]) program.addCommand(c);
program.addHelpText('after', EXIT_HELP);

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
usageExits(program, 'spook');

// Whatever escapes a command is reported in one line (exit 1), never as a stack trace.
try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.stderr.write(`spook: ${(e as Error).message}\n`);
  process.exit(EXIT.error);
}
