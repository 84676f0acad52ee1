/**
 * Unverified parallel emission — LOSSY, for contrast. Every forward emits all k drafted tokens
 * (the heads' argmaxes, or samples at temperature > 0) without checking them against the next-token
 * head: the seed article's "the output layer generates several tokens at once". τ = k by
 * construction, but tokens 2..k are guesses made without seeing tokens 1..k−1, so errors enter the
 * text and compound. With k = 1 it is plain greedy (or sampled) decoding. Sequential models, whose
 * modules draft one after another, go to decode/sequential_sampling.ts.
 */
import type { MtpModel } from '../model/create';
import type { SequentialModel } from '../model/sequential';
import { Rng } from '../util/rng';
import { roomInWindow } from './context';
import { checkDecodeArgs, HeadsSession } from './heads_session';
import { chooseToken, SamplingConfig, validateSampling } from './sampling';
import { sequentialUnverified } from './sequential_sampling';
import { DecodeResult, finishStats } from './stats';

export interface UnverifiedOptions extends Partial<SamplingConfig> {
  maxNewTokens: number;
  /** Tokens emitted per forward (heads used; default all). */
  k?: number;
  seed?: number;
}

/** Emits k head predictions per forward without verification (lossy). */
export async function unverifiedGenerate(model: MtpModel, prompt: number[], opts: UnverifiedOptions): Promise<DecodeResult> {
  if (model.config.mtp.kind === 'sequential') return sequentialUnverified(model as SequentialModel, prompt, opts);
  const s: SamplingConfig = { temperature: opts.temperature ?? 0, topK: opts.topK ?? 0, topP: opts.topP ?? 1 };
  validateSampling(s);
  const k = opts.k ?? model.k;
  checkDecodeArgs('unverified emission', model, prompt, opts.maxNewTokens, k);
  const rng = new Rng(opts.seed ?? 0);
  const V = model.config.vocabSize;
  const session = new HeadsSession(model, prompt, k);
  const seq = session.seq;
  const end = prompt.length + opts.maxNewTokens;
  const t0 = performance.now();
  try {
    while (seq.length < end) {
      // feed what the caches lack, read the heads at the last position, emit up to k tokens
      const last = session.forward([], 1); // [k, 1, V]
      const flat = (await last.data()) as Float32Array;
      last.dispose();
      const emit = Math.min(k, end - seq.length, roomInWindow(seq.length, model.config.blockSize));
      for (let i = 0; i < emit; i++) seq.push(chooseToken(flat.subarray(i * V, (i + 1) * V), s, rng));
    }
  } finally {
    session.dispose();
  }
  const method = `unverified k=${k} (lossy)`;
  return { tokens: seq.slice(prompt.length), stats: finishStats(method, seq.length - prompt.length, session.forwards, performance.now() - t0) };
}
