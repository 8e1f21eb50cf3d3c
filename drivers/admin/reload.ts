/** Admin API command `reload` (client/protocol.ts): what SIGHUP does, its report as the answer. */
import { ConfigError } from '../daemon/config.js';
import { ReloadBusy, ReloadRefused, type Spookd } from '../daemon/spookd.js';
import { AdminFault } from './args.js';
import type { Handlers } from './handlers.js';

export function reloadHandlers(d: Spookd): Handlers<'reload'> {
  return {
    reload: async () => {
      if (d.configPath === undefined)
        throw new AdminFault('conflict', 'spookd was started without a configuration file: nothing to reload');
      try {
        return await d.reload();
      } catch (e) {
        if (e instanceof ReloadBusy) throw new AdminFault('reload-in-progress', e.message);
        if (e instanceof ReloadRefused) throw new AdminFault('conflict', e.message);
        // The file's first field at fault, as `spookd --check` names it; nothing was changed.
        if (e instanceof ConfigError) throw new AdminFault('bad-config', e.message, e.fields[0]);
        throw e;
      }
    },
  };
}
