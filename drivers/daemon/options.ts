/** spookd's command line: what main.ts parses and what tools/man.ts renders into spookd(8). */
import { Command, Option } from 'commander';
import { buildInfo } from './build-info.js';

export interface SpookdOptions {
  config: string;
  check?: boolean;
  checkConfig: boolean;
  checkPorts: boolean;
}

export function spookdCommand(): Command {
  return (
    new Command()
      .name('spookd')
      .description('Spook daemon: forms authenticated pairs with the configured peers over UDP and keeps their registers aligned')
      // The commit is looked up only when asked for (git runs at most once, and not on every start).
      .option('-V, --version', 'print the version and the commit, then exit')
      .on('option:version', () => {
        const b = buildInfo();
        process.stdout.write(`${b.version} (commit ${b.commit}, Node.js ${process.version})\n`);
        process.exit(0);
      })
      .option('-c, --config <file>', 'configuration file (YAML)', '/etc/spook/spookd.conf')
      .option(
        '--check-config',
        "validate everything a start needs (the configuration, the key file, the peers' keys, paths, free ports), then exit",
        false,
      )
      .option('--no-check-ports', 'with --check-config: skip the free-port checks (to check the configuration of a spookd that runs)')
      .addOption(new Option('--check', 'same as --check-config').hideHelp())
  );
}
