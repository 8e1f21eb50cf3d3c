/**
 * What a wrapper is declared as (`spook wrap add PROTOCOL`): `tcp` is any other TCP
 * protocol; `coap` and `udp` are carried as UDP flows (§16.10).
 */
export const WRAP_PROTOCOLS = ['ssh', 'smb', 'postgres', 'tds', 'ldap', 'http', 'mqtt', 'coap', 'tcp', 'udp'] as const;
export type WrapProtocol = (typeof WRAP_PROTOCOLS)[number];

export const isDatagram = (p: WrapProtocol): boolean => p === 'coap' || p === 'udp';

/** How a wrapper's connections travel: TCP connections, or UDP flows. */
export const WRAP_TRANSPORTS = ['tcp', 'udp'] as const;
export type WrapTransport = (typeof WRAP_TRANSPORTS)[number];
export const transportOf = (p: WrapProtocol): WrapTransport => (isDatagram(p) ? 'udp' : 'tcp');

/** A wrapper is keyed by transport and port: one port may be wrapped for TCP and for UDP at once (DNS). */
export type WrapperKey = `${WrapTransport}/${number}`;
export const wrapperKey = (transport: WrapTransport, port: number): WrapperKey => `${transport}/${port}`;
