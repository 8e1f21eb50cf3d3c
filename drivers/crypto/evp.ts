/**
 * libcrypto's EVP cipher API through koffi, shared by the AEADs that keep one cipher context
 * per direction (the wrapper carrier's records, drivers/wrap/aead-evp.ts; ETCP's Data frames,
 * drivers/crypto/frame-aead.ts). Node's createCipheriv builds a cipher object and an OpenSSL
 * context per call, which at datagram and record sizes costs more than the cipher itself
 * (docs/BENCHMARKS.md); here the key is set once per context and each record only sets its IV.
 *
 * FFI safety: every buffer libcrypto reads or writes is a live JS buffer passed to a synchronous
 * call (libcrypto keeps no pointer to it: it copies key and IV into the context); callers bound
 * every length before a call; a context is freed once, by free(), with a FinalizationRegistry
 * only as the backstop for one never freed.
 */
import koffi from 'koffi';

export type EvpCipherName = 'chacha20-poly1305' | 'aes-256-gcm';

export const EVP_CTRL_AEAD_GET_TAG = 0x10;
export const EVP_CTRL_AEAD_SET_TAG = 0x11;

export interface Evp {
  ctxNew: () => unknown;
  ctxFree: (ctx: unknown) => void;
  cipher: Record<EvpCipherName, unknown>;
  encInit: (ctx: unknown, cipher: unknown, engine: null, key: Uint8Array | null, iv: Uint8Array | null) => number;
  /** `out` null: `inp` is associated data. */
  encUpdate: (ctx: unknown, out: Uint8Array | null, outl: Int32Array, inp: Uint8Array, inl: number) => number;
  encFinal: (ctx: unknown, out: Uint8Array, outl: Int32Array) => number;
  decInit: (ctx: unknown, cipher: unknown, engine: null, key: Uint8Array | null, iv: Uint8Array | null) => number;
  decUpdate: (ctx: unknown, out: Uint8Array | null, outl: Int32Array, inp: Uint8Array, inl: number) => number;
  decFinal: (ctx: unknown, out: Uint8Array, outl: Int32Array) => number;
  ctrl: (ctx: unknown, type: number, arg: number, ptr: Uint8Array) => number;
}

let evp: Evp | null | undefined;
let warned = false;
/** For tests: the library name tried (a missing one exercises the fallback). */
let libName = 'libcrypto.so.3';

let typesDeclared = false;
/** koffi's type names are global: declared once even when a test reloads the library. */
function declareTypes(): void {
  if (typesDeclared) return;
  koffi.opaque('spook_EVP_CIPHER_CTX');
  koffi.opaque('spook_EVP_CIPHER');
  typesDeclared = true;
}

/** Set by benches (the same-run baseline): act as if libcrypto were absent, without the warning. */
let forceNode = false;
export function forceNodeCrypto(on: boolean): void {
  forceNode = on;
}

/** The bound library, or null where it cannot be loaded (one warning per process; callers fall back to node:crypto). */
export function loadEvp(): Evp | null {
  if (forceNode) return null;
  if (evp !== undefined) return evp;
  try {
    const l = koffi.load(libName);
    declareTypes();
    const P = 'spook_EVP_CIPHER_CTX *';
    const C = 'const spook_EVP_CIPHER *';
    const e: Evp = {
      ctxNew: l.func(`${P} EVP_CIPHER_CTX_new()`),
      ctxFree: l.func(`void EVP_CIPHER_CTX_free(${P} ctx)`),
      cipher: {
        'aes-256-gcm': l.func(`${C} EVP_aes_256_gcm()`)(),
        'chacha20-poly1305': l.func(`${C} EVP_chacha20_poly1305()`)(),
      },
      encInit: l.func(`int EVP_EncryptInit_ex(${P} ctx, ${C} type, void *engine, const uint8_t *key, const uint8_t *iv)`),
      encUpdate: l.func(`int EVP_EncryptUpdate(${P} ctx, uint8_t *out, int *outl, const uint8_t *in, int inl)`),
      encFinal: l.func(`int EVP_EncryptFinal_ex(${P} ctx, uint8_t *out, int *outl)`),
      decInit: l.func(`int EVP_DecryptInit_ex(${P} ctx, ${C} type, void *engine, const uint8_t *key, const uint8_t *iv)`),
      decUpdate: l.func(`int EVP_DecryptUpdate(${P} ctx, uint8_t *out, int *outl, const uint8_t *in, int inl)`),
      decFinal: l.func(`int EVP_DecryptFinal_ex(${P} ctx, uint8_t *out, int *outl)`),
      ctrl: l.func(`int EVP_CIPHER_CTX_ctrl(${P} ctx, int type, int arg, void *ptr)`),
    };
    if (!e.cipher['aes-256-gcm'] || !e.cipher['chacha20-poly1305']) throw new Error('libcrypto lacks a cipher');
    evp = e;
  } catch (err) {
    evp = null;
    if (!warned) {
      warned = true;
      process.emitWarning(
        `libcrypto AEAD (carrier AEAD, ETCP Data frames): ${libName} not usable (${(err as Error).message}); sealing through node:crypto`,
      );
    }
  }
  return evp;
}

/** Whether AEADs run through libcrypto (false: node:crypto). */
export const evpAvailable = (): boolean => loadEvp() !== null;

/** For tests only: forget the loaded library and try `name` next (e.g. a missing one). */
export function reloadForTest(name: string): void {
  libName = name;
  evp = undefined;
  warned = false;
}

const contexts = new FinalizationRegistry<{ e: Evp; ctx: unknown; freed: boolean }>((h) => {
  if (!h.freed) {
    h.freed = true;
    h.e.ctxFree(h.ctx);
  }
});

/** A context owned by one sealer or opener: freed once, by free() or (backstop) the registry when `owner` is collected. */
export class EvpCtx {
  private readonly h: { e: Evp; ctx: unknown; freed: boolean };
  constructor(
    readonly e: Evp,
    owner: object,
  ) {
    const ctx = e.ctxNew();
    if (!ctx) throw new Error('EVP_CIPHER_CTX_new failed');
    this.h = { e, ctx, freed: false };
    contexts.register(owner, this.h, this);
  }
  get ptr(): unknown {
    if (this.h.freed) throw new Error('AEAD used after close');
    return this.h.ctx;
  }
  get freed(): boolean {
    return this.h.freed;
  }
  free(): void {
    if (this.h.freed) return;
    this.h.freed = true;
    contexts.unregister(this);
    this.h.e.ctxFree(this.h.ctx);
  }
}
