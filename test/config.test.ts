/** Config resolution and validation messages: what is wrong and what is allowed. */
import { describe, expect, it } from 'vitest';
import { countParams, MODEL_DEFAULTS, MODEL_DOCS, PRESETS, resolveConfig, TRAIN_DEFAULTS, TRAIN_DOCS } from '../src/config';

describe('config', () => {
  it('every default field has a one-line reason', () => {
    for (const k of Object.keys(MODEL_DEFAULTS)) expect(MODEL_DOCS[k as keyof typeof MODEL_DOCS]).toMatch(/\w{3,}/);
    for (const k of Object.keys(TRAIN_DEFAULTS)) expect(TRAIN_DOCS[k as keyof typeof TRAIN_DOCS]).toMatch(/\w{3,}/);
  });

  it('resolves DEFAULTS ← preset ← overrides', () => {
    const c = resolveConfig('nano', { model: { nLayer: 3 }, train: { lr: 0.01 } });
    expect(c.model.nLayer).toBe(3);
    expect(c.model.nEmbd).toBe(PRESETS.nano.model.nEmbd);
    expect(c.model.normEps).toBe(MODEL_DEFAULTS.normEps);
    expect(c.train.lr).toBe(0.01);
    expect(c.train.batchSize).toBe(PRESETS.nano.train.batchSize);
  });

  it('presets: nano ≤ 50k parameters; small and medium are the docs/performance.md shapes', () => {
    expect(countParams(resolveConfig('nano').model)).toBeLessThanOrEqual(50_000);
    expect(Math.round(countParams(resolveConfig('small').model) / 1e4)).toBe(87); // docs/performance.md: 0.87 M
    const m = resolveConfig('medium').model;
    expect([m.nLayer, m.nEmbd, m.nHead, m.blockSize]).toEqual([6, 256, 8, 256]);
  });

  it('countParams equals the variables every variant creates', async () => {
    const { createModel } = await import('../src/model/create');
    const { MTP_DEFAULTS } = await import('../src/config');
    for (const mtp of [MTP_DEFAULTS.none, { ...MTP_DEFAULTS.parallel, k: 3 }, { ...MTP_DEFAULTS.parallel, k: 3, matchParams: true }, { ...MTP_DEFAULTS.sequential, depth: 2 }, { ...MTP_DEFAULTS.medusa, heads: 3 }]) {
      const cfg = resolveConfig('nano', { model: { nLayer: 5, mtp } }).model;
      const model = createModel(cfg);
      expect([...model.params.values()].reduce((a, v) => a + v.size, 0), mtp.kind).toBe(countParams(cfg));
      model.dispose();
    }
  });

  const bad: [string, Parameters<typeof resolveConfig>[1], RegExp][] = [
    ['width not divisible by heads', { model: { nEmbd: 30, nHead: 4 } }, /model.nEmbd \(30\) must be divisible by model.nHead \(4\)/],
    ['zero layers', { model: { nLayer: 0 } }, /model.nLayer must be an integer ≥ 1, got 0/],
    ['fractional width', { model: { nEmbd: 32.5 } }, /model.nEmbd must be an integer ≥ 1, got 32.5/],
    ['NaN learning rate', { train: { lr: NaN } }, /train.lr must be a number in \(0, 10\], got NaN/],
    ['unknown backend', { train: { backend: 'cuda' as never } }, /unknown train.backend "cuda"; allowed: auto, cpu, wasm, webgl, webgpu, tensorflow/],
    ['unknown corpus', { train: { corpus: 'wiki' as never } }, /unknown train.corpus "wiki"; allowed: code, prose/],
    ['unknown tokenizer', { train: { tokenizer: 'bpe' as never } }, /unknown train.tokenizer "bpe"; allowed: byte, char/],
    ['unknown mtp kind', { model: { mtp: { kind: 'magic' } as never } }, /unknown model.mtp.kind "magic"; allowed: none/],
    ['unknown key', { model: { nLayers: 4 } as never }, /unknown config key model.nLayers; allowed: vocabSize, blockSize, nLayer/],
    ['byte tokenizer with another vocab', { model: { vocabSize: 100 } }, /model.vocabSize must be 256 with the byte tokenizer, got 100/],
  ];
  for (const [what, overrides, message] of bad) {
    it(`rejects ${what}`, () => expect(() => resolveConfig('nano', overrides)).toThrow(message));
  }

  it('lists every problem at once', () => {
    expect(() => resolveConfig('nano', { model: { nLayer: 0, nHead: 0 } })).toThrow(/nLayer[\s\S]*nHead/);
  });

  it('rejects an unknown preset, naming the allowed ones', () => {
    expect(() => resolveConfig('huge' as never)).toThrow(/unknown preset 'huge'; allowed: nano, tiny, deep, small, medium/);
  });
});
