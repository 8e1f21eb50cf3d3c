/**
 * `spook`: the admin CLI. Every inspection command prints a table for people and
 * `--json` for scripts; errors name what is wrong and exit non-zero.
 */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { adminCommands } from './admin.js';
import { domainCommands } from './domain.js';
import { wrapCommands } from './wrap.js';
import { keyCommands } from './keys.js';
import { xdpCommands } from './xdp.js';

const pkg = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json'), 'utf8')) as {
  version: string;
};

const program = new Command()
  .name('spook')
  .description('Spook: deterministic shared state over UDP. Admin CLI.')
  .version(pkg.version)
  .showHelpAfterError('(run with --help for usage)');

for (const c of [...keyCommands(), ...adminCommands(), ...domainCommands(), ...wrapCommands(), ...xdpCommands()]) program.addCommand(c);

await program.parseAsync(process.argv);
