/**
 * spookd's logger: pino JSON lines on stdout, pretty on a terminal, and under systemd's journal
 * each line prefixed with its syslog priority (`<4>` for warn, ...; sd-daemon(3)), which
 * journald strips and keeps as the entry's PRIORITY, so `journalctl -p warning` works.
 */
import { pino, type Logger } from 'pino';

export type LogFormat = 'auto' | 'json' | 'journal' | 'pretty';

/** pino's numeric levels → syslog priorities (trace and debug are both 7, debug). */
export function syslogPriority(level: number): number {
  return level >= 60 ? 2 : level >= 50 ? 3 : level >= 40 ? 4 : level >= 30 ? 6 : 7;
}

/** `auto`: pretty on a terminal, journal when stdout is the journal (systemd sets JOURNAL_STREAM), else JSON. */
export function resolveFormat(
  format: LogFormat,
  env: NodeJS.ProcessEnv = process.env,
  tty = !!process.stdout.isTTY,
): Exclude<LogFormat, 'auto'> {
  if (format !== 'auto') return format;
  if (tty) return 'pretty';
  return env.JOURNAL_STREAM ? 'journal' : 'json';
}

const LEVEL = /"level":(\d+)/;

export function makeLogger(level: string, format: LogFormat): Logger {
  const f = resolveFormat(format);
  const base = { level, base: { pid: process.pid } };
  if (f === 'pretty') return pino({ ...base, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l' } } });
  if (f === 'json') return pino(base);
  return pino({
    ...base,
    hooks: {
      // The line as pino wrote it, with its priority in front; the level is the first field pino writes.
      streamWrite: (line: string) => `<${syslogPriority(Number(LEVEL.exec(line)?.[1] ?? 30))}>${line}`,
    },
  });
}
