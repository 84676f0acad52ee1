/**
 * Tokenizers: text <-> integer ids. Two kinds, both with a tiny fixed vocabulary so a model trains in minutes:
 *
 * - `byte` (the default): the UTF-8 bytes of the text, vocab 256. Any text, no fitting, no unknown tokens.
 * - `char`: one id per Unicode code point of an alphabet taken from a text (sorted by code point), vocab = alphabet size.
 *   Shorter sequences than bytes for non-ASCII text, but text outside the alphabet cannot be encoded.
 *
 * Browser-safe: plain typed arrays and the global TextEncoder/TextDecoder, no I/O, no tfjs.
 */

export const TOKENIZER_NAMES = ['byte', 'char'] as const;
export type TokenizerName = (typeof TOKENIZER_NAMES)[number];

/** Everything needed to rebuild a tokenizer (stored beside checkpoints). */
export type TokenizerSpec = { kind: 'byte' } | { kind: 'char'; chars: string };

export interface Tokenizer {
  readonly kind: TokenizerName;
  readonly vocabSize: number;
  /** Text to ids. */
  encode(text: string): Int32Array;
  /** Ids to text; throws on an id outside [0, vocabSize). */
  decode(ids: ArrayLike<number>): string;
  toJSON(): TokenizerSpec;
}

/** Readable form of one code point for error messages: the character and its U+ code. */
function describeCodePoint(cp: number): string {
  const hex = cp.toString(16).toUpperCase().padStart(4, '0');
  return `${JSON.stringify(String.fromCodePoint(cp))} (U+${hex})`;
}

function checkId(id: number, index: number, vocabSize: number, kind: TokenizerName): void {
  if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
    throw new Error(
      `${kind} tokenizer: cannot decode id ${id} at position ${index}; ids must be integers in [0, ${vocabSize})`,
    );
  }
}

/**
 * UTF-8 bytes, vocab 256.
 *
 * Round-trip: `decode(encode(s)) === s` for every well-formed string (any script, emoji, a leading U+FEFF BOM, the empty
 * string). A lone UTF-16 surrogate has no UTF-8 form; TextEncoder writes U+FFFD for it, so such strings do not round-trip.
 *
 * Decoding bytes that are not valid UTF-8 — notably a sequence cut in the middle of a multi-byte character, as a model's
 * output or a window of a corpus often is — does not throw: invalid bytes become U+FFFD replacement characters and every
 * complete character around them decodes unchanged (WHATWG UTF-8 decode, non-fatal). A character cut at the end gives
 * one U+FFFD; one cut at the start leaves stray continuation bytes, each giving its own U+FFFD (so "😀" missing its
 * first byte decodes to three).
 */
export class ByteTokenizer implements Tokenizer {
  readonly kind = 'byte' as const;
  readonly vocabSize = 256;
  private readonly encoder = new TextEncoder();
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  encode(text: string): Int32Array {
    return new Int32Array(this.encoder.encode(text));
  }

  decode(ids: ArrayLike<number>): string {
    const bytes = new Uint8Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      checkId(id, i, 256, 'byte');
      bytes[i] = id;
    }
    return this.decoder.decode(bytes);
  }

  toJSON(): TokenizerSpec {
    return { kind: 'byte' };
  }
}

/**
 * One id per code point of a fixed alphabet; id = index of the code point in `chars`.
 *
 * `decode(encode(s)) === s` for every string over the alphabet. Encoding any other character throws an error naming it
 * and its position. Code points, not UTF-16 units: an emoji is one token.
 */
export class CharTokenizer implements Tokenizer {
  readonly kind = 'char' as const;
  readonly vocabSize: number;
  /** The alphabet in id order, as one string. */
  readonly chars: string;
  /** id -> code point. */
  private readonly codePoints: Int32Array;
  /** code point -> id. */
  private readonly ids: Map<number, number>;

  /** `chars`: the alphabet in id order (each code point once). `fromText` builds the usual sorted alphabet. */
  constructor(chars: string) {
    const cps = Array.from(chars, (c) => c.codePointAt(0) as number);
    if (cps.length === 0) throw new Error('char tokenizer: the alphabet is empty; build it from a non-empty text');
    const ids = new Map<number, number>();
    cps.forEach((cp, id) => {
      if (ids.has(cp)) {
        throw new Error(
          `char tokenizer: ${describeCodePoint(cp)} appears twice in the alphabet; each character must appear once`,
        );
      }
      ids.set(cp, id);
    });
    this.chars = chars;
    this.vocabSize = cps.length;
    this.codePoints = Int32Array.from(cps);
    this.ids = ids;
  }

  /** The alphabet of `text`: its distinct code points sorted by value. */
  static fromText(text: string): CharTokenizer {
    const seen = new Set<number>();
    for (const c of text) seen.add(c.codePointAt(0) as number);
    const sorted = Array.from(seen).sort((a, b) => a - b);
    return new CharTokenizer(stringFromCodePoints(sorted));
  }

  encode(text: string): Int32Array {
    const out = new Int32Array(text.length); // code points <= UTF-16 units
    let n = 0;
    for (let i = 0; i < text.length; ) {
      const cp = text.codePointAt(i) as number;
      const id = this.ids.get(cp);
      if (id === undefined) {
        throw new Error(
          `char tokenizer: character ${describeCodePoint(cp)} at position ${n} (token index; UTF-16 index ${i}) ` +
            `is not in the alphabet of ${this.vocabSize} characters; build the tokenizer from a text that contains ` +
            `it, or use the byte tokenizer, which encodes any text`,
        );
      }
      out[n++] = id;
      i += cp > 0xffff ? 2 : 1;
    }
    return out.slice(0, n);
  }

  decode(ids: ArrayLike<number>): string {
    const cps = new Int32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      checkId(id, i, this.vocabSize, 'char');
      cps[i] = this.codePoints[id];
    }
    return stringFromCodePoints(cps);
  }

  toJSON(): TokenizerSpec {
    return { kind: 'char', chars: this.chars };
  }
}

/** String.fromCodePoint over chunks, so long inputs stay under the engines' argument-count limits. */
function stringFromCodePoints(cps: ArrayLike<number>): string {
  const CHUNK = 8192;
  const parts: string[] = [];
  for (let i = 0; i < cps.length; i += CHUNK) {
    parts.push(String.fromCodePoint(...Array.prototype.slice.call(cps, i, i + CHUNK)));
  }
  return parts.join('');
}

/** Build a tokenizer by kind. `text` is required for `char` (its alphabet is taken from it) and ignored for `byte`. */
export function makeTokenizer(kind: TokenizerName, text?: string): Tokenizer {
  switch (kind) {
    case 'byte':
      return new ByteTokenizer();
    case 'char':
      if (text === undefined) throw new Error("makeTokenizer('char'): pass the text whose characters form the alphabet");
      return CharTokenizer.fromText(text);
    default:
      throw new Error(`unknown tokenizer ${JSON.stringify(kind)}; allowed: ${TOKENIZER_NAMES.join(', ')}`);
  }
}

/** Rebuild a tokenizer from `toJSON()` output. */
export function tokenizerFromSpec(spec: TokenizerSpec): Tokenizer {
  const kind = (spec as { kind?: unknown }).kind;
  if (kind === 'byte') return new ByteTokenizer();
  if (kind === 'char') {
    const chars = (spec as { chars?: unknown }).chars;
    if (typeof chars !== 'string') {
      throw new Error('tokenizer spec of kind "char" needs a string field "chars" (the alphabet)');
    }
    return new CharTokenizer(chars);
  }
  throw new Error(`tokenizer spec has unknown kind ${JSON.stringify(kind)}; allowed: ${TOKENIZER_NAMES.join(', ')}`);
}
