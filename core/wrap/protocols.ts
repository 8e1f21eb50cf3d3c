/**
 * What a wrapper is declared as (`spook wrap add PROTOCOL`): `tcp` is any other TCP
 * protocol; `coap` and `udp` are carried as UDP flows (§16.10).
 */
export const WRAP_PROTOCOLS = ['ssh', 'smb', 'postgres', 'tds', 'ldap', 'http', 'mqtt', 'coap', 'tcp', 'udp'] as const;
export type WrapProtocol = (typeof WRAP_PROTOCOLS)[number];

export const isDatagram = (p: WrapProtocol): boolean => p === 'coap' || p === 'udp';
