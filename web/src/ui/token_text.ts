/**
 * Token ids → display text, for a lane's stream of steps: byte tokens go through one streaming UTF-8 decoder (a
 * character split across steps shows when its last byte arrives), char tokens map one to one. Labels for single
 * tokens (tree nodes) show whitespace and non-printable bytes visibly.
 */
import { tokenizerFromSpec, Tokenizer, TokenizerSpec } from '../../../src/data/tokenizer';

export class TokenText {
  private readonly tokenizer: Tokenizer;
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false });

  constructor(readonly spec: TokenizerSpec) {
    this.tokenizer = tokenizerFromSpec(spec);
  }

  /** Text of the next tokens of the stream (bytes of an unfinished character are held back). */
  next(ids: readonly number[]): string {
    if (this.spec.kind === 'byte') return this.utf8.decode(Uint8Array.from(ids), { stream: true });
    return this.tokenizer.decode(ids);
  }

  /** A visible label for one token: '␣' for a space, '↵' for a newline, \xNN for other non-printable bytes. */
  label(id: number): string {
    const s = this.spec.kind === 'byte' ? (id >= 0x20 && id < 0x7f ? String.fromCharCode(id) : '') : this.tokenizer.decode([id]);
    if (s === ' ') return '␣';
    if (s === '\n') return '↵';
    if (s === '\t') return '⇥';
    if (s === '' || /[\u0000-\u001f\u007f-\u009f]/.test(s)) return `\\x${id.toString(16).padStart(2, '0')}`;
    return s;
  }
}
