/**
 * Anti-replay window in the style of RFC 6479: a bitmap of the last WINDOW packet numbers
 * below the highest authenticated one. check() before decrypting (cheap rejection),
 * commit() only after the AEAD authenticated the packet, so a forged packet number
 * cannot move the window.
 */
const WORD_BITS = 32;
const WORDS = 64; // 2048 bits of history, as WireGuard's
export const REPLAY_WINDOW = (WORDS - 1) * WORD_BITS;

export class ReplayWindow {
  private readonly bitmap = new Uint32Array(WORDS);
  private top = -1;

  /** Whether `n` may be new: not older than the window, not already seen. */
  check(n: number): boolean {
    if (!Number.isSafeInteger(n) || n < 0) return false;
    if (n > this.top) return true;
    if (n + REPLAY_WINDOW <= this.top) return false;
    return (this.bitmap[Math.floor(n / WORD_BITS) % WORDS] & (1 << (n % WORD_BITS))) === 0;
  }

  /** Record an authenticated `n`; returns false if it was a replay after all. */
  commit(n: number): boolean {
    if (!this.check(n)) return false;
    if (n > this.top) {
      const topWord = Math.floor(this.top / WORD_BITS);
      const newWord = Math.floor(n / WORD_BITS);
      // Clear the words that slide into the window (at most all of them).
      for (let w = Math.max(topWord + 1, newWord - WORDS + 1); w <= newWord; w++) this.bitmap[w % WORDS] = 0;
      this.top = n;
    }
    this.bitmap[Math.floor(n / WORD_BITS) % WORDS] |= 1 << (n % WORD_BITS);
    return true;
  }
}
