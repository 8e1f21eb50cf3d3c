/** `spook keygen` and `spook pubkey`: host identity keys. */
import { Command } from 'commander';
import { encodeKey, readPrivateKey, writePrivateKey } from '../drivers/daemon/keys.js';

export function keyCommands(): Command[] {
  const keygen = new Command('keygen')
    .description('create a host key pair: writes the private key (mode 0600, refuses to overwrite), prints the public key')
    .argument('<private-key-file>')
    .action((file: string) => {
      try {
        process.stdout.write(`${encodeKey(writePrivateKey(file).publicKey)}\n`);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        process.stderr.write(`spook: ${file}: ${code === 'EEXIST' ? 'already exists; not overwriting a key' : (e as Error).message}\n`);
        process.exit(1);
      }
    });
  const pubkey = new Command('pubkey')
    .description('print the public key of a private key file')
    .argument('<private-key-file>')
    .action((file: string) => {
      try {
        process.stdout.write(`${encodeKey(readPrivateKey(file).publicKey)}\n`);
      } catch (e) {
        process.stderr.write(`spook: ${(e as Error).message}\n`);
        process.exit(1);
      }
    });
  return [keygen, pubkey];
}
