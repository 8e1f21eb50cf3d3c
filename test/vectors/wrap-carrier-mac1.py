# Written from docs/PROTOCOL.md §16.2 text only: the carrier's message 1 frame is
# u32be(112) || m1 (96 octets) || mac1, mac1 = HMAC-BLAKE2s-256(BLAKE2s-256("wrapmac1" || S_pub), m1)[0:16].
import hashlib, hmac
spub = bytes.fromhex('31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62')
m1 = bytes(i & 0xff for i in range(96))
key = hashlib.blake2s(b'wrapmac1' + spub).digest()
mac1 = hmac.new(key, m1, hashlib.blake2s).digest()[:16]
print('key', key.hex())
print('mac1', mac1.hex())
print('frame', ((112).to_bytes(4, 'big') + m1 + mac1).hex())
