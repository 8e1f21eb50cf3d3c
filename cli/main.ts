/**
 * `spook`: the admin CLI. Every inspection command prints a table for people and
 * `--json` for scripts; errors name what is wrong and exit non-zero.
 */
import { EXIT } from './admin.js';
import { spookProgram } from './program.js';

// Whatever escapes a command is reported in one line (exit 1), never as a stack trace.
try {
  await spookProgram().parseAsync(process.argv);
} catch (e) {
  process.stderr.write(`spook: ${(e as Error).message}\n`);
  process.exit(EXIT.error);
}
