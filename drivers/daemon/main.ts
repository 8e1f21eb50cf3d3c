/** `spookd`: the Spook daemon. Foreground process; logs JSON (pretty on a terminal); SIGTERM stops it cleanly. */
import { makeLogger } from './logger.js';
import { loadConfig, ConfigError } from './config.js';
import { readPrivateKey } from './keys.js';
import { ReloadBusy, ReloadRefused, Spookd } from './spookd.js';
import { StoreError } from '../store/store.js';
import { resolveAdminGroup } from '../admin/access.js';
import { sdNotify } from '../wrap/fdstore.js';
import { spookdCommand, type SpookdOptions } from './options.js';
import { checkPaths, checkPorts, formatProblems } from './preflight.js';
import { RERESOLVE_MS, resolveEndpoints } from './resolve.js';

/** Stopped, but a store's last flush failed (sysexits' EX_IOERR): writes it acknowledged may be lost. */
const EXIT_STORE_FAILED = 74;

const program = spookdCommand().action(async (o: SpookdOptions) => {
  let cfg;
  let key;
  try {
    cfg = loadConfig(o.config);
    key = readPrivateKey(cfg.privateKeyFile);
    if (cfg.adminGroup !== undefined) resolveAdminGroup(cfg.adminGroup); // an unknown group is a configuration error
  } catch (e) {
    process.stderr.write(`spookd: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const check = o.check || o.checkConfig;
  // What would fail at start, named by field: the same checks before a start, ports only in a check
  // (a start reports its own bind failures by field).
  const problems = [...checkPaths(cfg, key), ...(check && o.checkPorts ? await checkPorts(cfg) : [])];
  if (problems.length > 0) {
    process.stderr.write(`${formatProblems(o.config, problems)}\n`);
    process.exit(2);
  }
  // Peers given by DNS name: resolved now, and again while they do not answer (Spookd.watchNames).
  // A name that does not resolve is not fatal: the peer may come to us, and the name may resolve later.
  const resolved = await resolveEndpoints(cfg);
  const unresolved = resolved.failed.map(
    (f) => `${o.config}: ${f.field}: cannot resolve ${f.host} (${f.error}); spookd retries every ${RERESOLVE_MS / 1000} s`,
  );
  if (check) {
    for (const w of unresolved) process.stderr.write(`warning: ${w}\n`);
    process.stdout.write(
      `${o.config}: OK (${cfg.peers.length} peer(s), ${cfg.registers.length} register(s), ${cfg.domains.length} domain(s), ${cfg.wrap.wrappers.length} wrapper(s))\n`,
    );
    return;
  }
  const log = makeLogger(cfg.logLevel, cfg.logFormat);
  let d: Spookd;
  try {
    for (const w of unresolved) log.warn(w);
    d = new Spookd(resolved.cfg, key, log);
    await d.start();
    d.watchNames(resolved.named);
    // Under systemd (Type=notify): started. Also what lets a restart hand wrapped connections over.
    sdNotify('READY=1');
  } catch (e) {
    // Expected failures (a store, a field, a system call refused) as one line; anything else is a bug: its stack.
    const errno = e as NodeJS.ErrnoException;
    if (e instanceof StoreError || e instanceof ConfigError) log.fatal(e.message);
    else if (typeof errno.code === 'string' && errno.syscall) log.fatal(`failed to start: ${errno.message}`);
    else log.fatal({ err: e }, 'failed to start');
    process.exit(1);
  }
  let stopping = false;
  const stop = (sig: string, code = 0): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'shutting down');
    sdNotify('STOPPING=1');
    // A shutdown that hangs must still end: the unit restarts us either way.
    setTimeout(() => process.exit(code || 1), 10_000).unref();
    // After an uncaught exception the wrap state is not trusted to the next process: no handover.
    d.stop({ handover: code === 0 }).then(
      // A store whose last flush failed: what it acknowledged may be lost, never reported as a clean stop.
      (r) => process.exit(code === 0 && r.storeFailures > 0 ? EXIT_STORE_FAILED : code),
      (e: unknown) => {
        log.error({ err: e }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  // Peer input is contained per peer (spookd.ts); anything that still escapes is a bug: report
  // it as an abnormal end (exit 70), but through the shutdown path (admin socket removed, XDP
  // detached, peers told we are going away), not by dying where we stand.
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e }, 'uncaught exception; stopping');
    stop('uncaughtException', 70);
  });
  process.on('unhandledRejection', (e) => {
    log.fatal({ err: e }, 'unhandled rejection; stopping');
    stop('unhandledRejection', 70);
  });
  // SIGHUP reloads the configuration (as `wg syncconf`; reload.ts, the same as `spook reload`); it
  // never ends the daemon (Node's default would). The reload logs what it did, or why it changed nothing.
  d.configPath = o.config;
  process.on('SIGHUP', () => {
    d.reload().catch((e: unknown) => {
      if (e instanceof ReloadBusy) log.warn('SIGHUP during a reload: ignored (send it again once the reload is logged)');
      else if (e instanceof ReloadRefused) log.warn(`SIGHUP ignored: ${e.message}`);
    });
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
});

await program.parseAsync(process.argv);
