/** `spook reload`: what SIGHUP does (spookd reads its configuration file again and applies it), with its report. */
import { Command } from 'commander';
import { EXIT, call, out, type Common } from './admin.js';
import { refusalSubject, type ReloadReport } from '../client/protocol.js';

/** The report for people: one line per kind of change, nothing for what did not change. */
export function describeReload(r: ReloadReport): string {
  const list = (xs: readonly string[]): string => xs.join(', ');
  const lines = [`reloaded ${r.config}`];
  const peers = (['added', 'removed', 'rekeyed', 'moved'] as const).filter((k) => r[k].length > 0).map((k) => `${k} ${list(r[k])}`);
  if (peers.length > 0) lines.push(`peers       ${peers.join('; ')}`);
  const w = r.wrappers;
  const wraps = (['added', 'removed', 'reset', 'updated'] as const).filter((k) => w[k].length > 0).map((k) => `${k} ${list(w[k])}`);
  if (wraps.length > 0) lines.push(`wrappers    ${wraps.join('; ')}${w.reset.length > 0 ? ' (reset: their connections were reset)' : ''}`);
  if (r.allowChanged) lines.push('wrap.allow  replaced (applies to the next dial)');
  for (const l of r.limits) {
    lines.push(`register    ${l.register}: new ${list(l.changed)}`);
    for (const o of l.over)
      lines.push(`            pair ${o.peer} holds more (${o.keys} keys, ${o.bytes} bytes): kept, further growth refused`);
  }
  if (r.needRestart.length > 0) lines.push(`restart     needed for ${list(r.needRestart)}`);
  for (const x of r.refused) lines.push(`refused     ${refusalSubject(x)}: ${x.reason}`);
  if (lines.length === 1) lines.push('nothing changed');
  return lines.join('\n');
}

/** Exit status: a change the daemon refused (left as it was) is a failure of the reload, whatever else it applied. */
export const reloadExit = (r: ReloadReport): number => (r.refused.length > 0 ? EXIT.error : EXIT.ok);

export function reloadCommands(): Command[] {
  return [
    new Command('reload')
      .description(
        "read the configuration file again and apply it, as SIGHUP does: peers, wrappers, wrap.allow, registers' limits; names what needs a restart",
      )
      .action(async (o: Common) => {
        const r = await call(o, 'reload');
        out(o, r, () => describeReload(r));
        process.exitCode = reloadExit(r);
      }),
  ];
}
