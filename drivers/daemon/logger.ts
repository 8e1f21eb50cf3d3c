/**
 * spookd's logger: pino JSON lines on stdout, pretty on a terminal, and under systemd's journal
 * each line prefixed with its syslog priority (`<4>` for warn, ...; sd-daemon(3)), which
 * journald strips and keeps as the entry's PRIORITY, so `journalctl -p warning` works.
 */
import { fstatSync } from 'node:fs';
import { pino, type Logger } from 'pino';

export type LogFormat = 'auto' | 'json' | 'journal' | 'pretty';

/** pino's numeric levels → syslog priorities (trace and debug are both 7, debug). */
export function syslogPriority(level: number): number {
  return level >= 60 ? 2 : level >= 50 ? 3 : level >= 40 ? 4 : level >= 30 ? 6 : 7;
}

/**
 * `auto`: pretty on a terminal; journal when stdout is the journal, that is when JOURNAL_STREAM
 * (set by systemd) names stdout's own device and inode (sd-daemon(3): a child writing to a pipe
 * inherits the variable); else JSON.
 */
export function resolveFormat(
  format: LogFormat,
  env: NodeJS.ProcessEnv = process.env,
  tty = !!process.stdout.isTTY,
  stdoutId: string | undefined = stdoutDevIno(),
): Exclude<LogFormat, 'auto'> {
  if (format !== 'auto') return format;
  if (tty) return 'pretty';
  return env.JOURNAL_STREAM !== undefined && env.JOURNAL_STREAM === stdoutId ? 'journal' : 'json';
}

/** `DEV:INODE` of stdout, as JOURNAL_STREAM writes it. */
function stdoutDevIno(): string | undefined {
  try {
    const st = fstatSync(1);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
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
