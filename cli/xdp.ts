/** `spook xdp status` (from the daemon) and `spook maps dump` (from the pinned maps, readable while spookd runs). */
import { Command } from 'commander';
import { EXIT, call, iso } from './admin.js';
import { PIN_DIR, counterReader, openPinned, pairsReader, readCounters, readPairStats } from '../drivers/bpf/xdp.js';

export function xdpCommands(): Command[] {
  const xdp = new Command('xdp').description('the XDP fast path');
  xdp
    .command('status')
    .description('interface, mode, program id, attach time, counters (asks spookd)')
    .action(async (o: { socket: string; json: boolean }) => {
      const s = await call(o, 'xdp');
      if (o.json) return void console.log(JSON.stringify(s, null, 2));
      if (!s.enabled) return void console.log(`XDP: off${s.error ? ` (${s.error})` : ' (not configured)'}`);
      console.log(
        `interface   ${s.interface}\nmode        ${s.mode}\nprogram id  ${s.programId}\nattached    ${iso(s.attachedAt)}\npinned      ${s.pinned ? s.pinDir : 'no'}`,
      );
      console.log(
        `counters    ${
          Object.entries(s.counters ?? {})
            .filter(([, v]) => v > 0)
            .map(([k, v]) => `${k}=${v}`)
            .join(' ') || '(all zero)'
        }`,
      );
    });

  const maps = new Command('maps').description('BPF maps pinned by spookd');
  maps
    .command('dump')
    .description('dump a pinned map: pairs (pair id, packets, bytes) or counters (per reason)')
    .argument('<map>', 'pairs | counters')
    .option('--pin-dir <dir>', 'where spookd pinned the maps', PIN_DIR)
    .action((name: string, o: { pinDir: string; json: boolean }) => {
      try {
        if (name === 'counters') {
          const c = readCounters(counterReader(openPinned('counters', o.pinDir)));
          if (o.json) console.log(JSON.stringify(c, null, 2));
          else for (const [k, v] of Object.entries(c)) console.log(`${k.padEnd(24)}${v}`);
        } else if (name === 'pairs') {
          const p = readPairStats(pairsReader(openPinned('pairs', o.pinDir)));
          if (o.json) console.log(JSON.stringify(p, null, 2));
          else {
            console.log('PAIRID      PACKETS  BYTES');
            for (const r of p) console.log(`${String(r.pairId).padEnd(12)}${String(r.packets).padEnd(9)}${r.bytes}`);
          }
        } else {
          process.stderr.write(`spook: unknown map ${JSON.stringify(name)}: pairs or counters\n`);
          process.exit(EXIT.usage);
        }
      } catch (e) {
        process.stderr.write(`spook: ${(e as Error).message}\n`);
        process.exit(1);
      }
    });
  return [xdp, maps];
}
