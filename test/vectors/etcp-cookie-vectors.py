# Written from docs/PROTOCOL.md §12.8 text only: MAC(key, m) = HMAC-BLAKE2s-256(key, m)[0:16];
# mac1 key = BLAKE2s-256("mac1----" || S_pub); cookie = MAC(secret, source); mac2 = MAC(cookie, frame[0:L-16]);
# CookieReply: XChaCha20-Poly1305(BLAKE2s-256("cookie--" || S_pub), nonce, cookie, ad = mac1).
import hashlib, hmac, struct
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
def H(*p):
    h=hashlib.blake2s()
    for x in p: h.update(x)
    return h.digest()
def MAC(k,m): return hmac.new(k,m,hashlib.blake2s).digest()[:16]
def rotl(v,c): return ((v<<c)&0xffffffff)|(v>>(32-c))
def qr(s,a,b,c,d):
    s[a]=(s[a]+s[b])&0xffffffff; s[d]=rotl(s[d]^s[a],16)
    s[c]=(s[c]+s[d])&0xffffffff; s[b]=rotl(s[b]^s[c],12)
    s[a]=(s[a]+s[b])&0xffffffff; s[d]=rotl(s[d]^s[a],8)
    s[c]=(s[c]+s[d])&0xffffffff; s[b]=rotl(s[b]^s[c],7)
def hchacha(k,n):
    s=[0x61707865,0x3320646e,0x79622d32,0x6b206574]+list(struct.unpack('<8I',k))+list(struct.unpack('<4I',n))
    for _ in range(10):
        qr(s,0,4,8,12);qr(s,1,5,9,13);qr(s,2,6,10,14);qr(s,3,7,11,15)
        qr(s,0,5,10,15);qr(s,1,6,11,12);qr(s,2,7,8,13);qr(s,3,4,9,14)
    return struct.pack('<8I',*(s[0:4]+s[12:16]))
def xseal(k,n,pt,ad):
    sub=hchacha(k,n[:16]); return ChaCha20Poly1305(sub).encrypt(b'\0'*4+n[16:],pt,ad)
assert hchacha(bytes(range(32)),bytes.fromhex('000000090000004a0000000031415927')).hex()=='82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc'
spub=bytes.fromhex('31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62')
hdr=bytes.fromhex('5350010100140092'+'00000000'+'00000000'+'00000000')
body=bytes(i & 0xff for i in range(130))
frame=hdr+body
m1=MAC(H(b'mac1----',spub), frame)
secret=bytes([1]*32); src=b'192.0.2.1:51820'
cookie=MAC(secret,src)
m2=MAC(cookie, frame+m1)
print('mac1key', H(b'mac1----',spub).hex())
print('mac1', m1.hex()); print('cookie', cookie.hex()); print('mac2', m2.hex())
nonce=bytes(range(0x40,0x58))
print('sealed', xseal(H(b'cookie--',spub),nonce,cookie,m1).hex())
