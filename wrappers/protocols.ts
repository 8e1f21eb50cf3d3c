/** What a wrapper is declared as (`spook wrap add PROTOCOL`); `tcp` is any other TCP protocol. */
export const WRAP_PROTOCOLS = ['ssh', 'smb', 'postgres', 'tds', 'ldap', 'http', 'mqtt', 'tcp'] as const;
export type WrapProtocol = (typeof WRAP_PROTOCOLS)[number];
