/** Packs encoded messages into one Data payload up to a byte limit. */
import { Writer } from '../../wire/buffer.js';

export class PayloadBuilder {
  private readonly w: Writer;
  constructor(readonly limit: number) {
    this.w = new Writer(limit);
  }

  get room(): number {
    return this.limit - this.w.pos;
  }

  get empty(): boolean {
    return this.w.pos === 0;
  }

  /** Adds an encoded message if it fits; false leaves the payload unchanged. */
  add(raw: Uint8Array): boolean {
    if (raw.length > this.room) return false;
    this.w.bytes(raw);
    return true;
  }

  finish(): Uint8Array {
    return this.w.finish();
  }
}
