/**
 * The host's default wrapper hold: its TCP patience (core/wrap/hold.ts), from the kernel's
 * net.ipv4.tcp_retries2 read once at start. Where /proc cannot be read, Linux's default (15)
 * is assumed: 925 s.
 */
import { readFileSync } from 'node:fs';
import { defaultHoldMs } from '../../core/wrap/hold.js';
import { defaultConnectTimeoutMs } from '../../core/wrap/connect.js';

export const TCP_RETRIES2_PATH = '/proc/sys/net/ipv4/tcp_retries2';
export const TCP_SYN_RETRIES_PATH = '/proc/sys/net/ipv4/tcp_syn_retries';

/** This host's tcp_retries2 (or another such counter of /proc/sys), or undefined when unreadable. */
export function readTcpRetries2(path = TCP_RETRIES2_PATH): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(n) && n >= 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The default hold on this host, in ms (925,000 with the kernel's defaults). */
export function hostDefaultHoldMs(path = TCP_RETRIES2_PATH): number {
  return defaultHoldMs(readTcpRetries2(path));
}

/** A wrapper's default connect timeout on this host: its SYN patience, from tcp_syn_retries (127,000 ms with the kernel's defaults). */
export function hostDefaultConnectTimeoutMs(path = TCP_SYN_RETRIES_PATH): number {
  return defaultConnectTimeoutMs(readTcpRetries2(path));
}
