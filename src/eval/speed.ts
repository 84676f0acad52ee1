/**
 * Wall-clock comparison of a speculative decoder with greedy AR on the same model, prompts and
 * backend, in the same run (Spec-Bench conventions, docs/algorithms.md, metrics): runs are interleaved (AR, method,
 * AR, …) so machine noise hits both alike; speedup = median tokens/s of the method ÷ median tokens/s
 * of AR; τ and αᵢ are pooled over all prompts; every output is checked against AR's.
 */
import { generate } from '../decode/ar';
import type { SpeculativeStats } from '../decode/stats';
import type { MtpModel } from '../model/create';
import { median } from '../util/median';

/** A decoder under test: greedy, returns tokens and speculative stats. */
export type Decoder = (model: MtpModel, prompt: number[], maxNewTokens: number) => Promise<{ tokens: number[]; stats: SpeculativeStats }>;

export interface SpeedRow {
  label: string;
  /** τ: tokens committed per forward, pooled over prompts. */
  tau: number;
  /** αᵢ pooled over prompts (draft position 2, 3, …). */
  alpha: number[];
  tokensPerSec: number;
  arTokensPerSec: number;
  speedup: number;
  /** Every run's output equalled greedy AR's. */
  identical: boolean;
}

export interface SpeedOptions {
  /** Tokens generated per prompt. */
  tokens: number;
  /** Timed repetitions over all prompts (medians). */
  runs: number;
}

/**
 * Measures each labelled decoder against greedy AR (`generate` on the model's trunk). A decoder whose
 * output differs from AR's is reported with identical = false (callers treat that as a failure).
 */
export async function compareWithAR(model: MtpModel, prompts: number[][], decoders: { label: string; decode: Decoder }[], opts: SpeedOptions): Promise<SpeedRow[]> {
  // warm-up: kernel compilation and allocator growth are not part of the measurement
  await generate(model.trunk, prompts[0], { maxNewTokens: 8 });
  for (const d of decoders) await d.decode(model, prompts[0], 8);
  const reference: number[][] = [];
  for (const p of prompts) reference.push((await generate(model.trunk, p, { maxNewTokens: opts.tokens })).tokens);
  const arTps: number[] = [];
  const tps = decoders.map(() => [] as number[]);
  const pooled = decoders.map(() => ({ tokens: 0, forwards: 0, attempts: [] as number[], accepts: [] as number[], identical: true }));
  for (let r = 0; r < opts.runs; r++) {
    for (let p = 0; p < prompts.length; p++) {
      arTps.push((await generate(model.trunk, prompts[p], { maxNewTokens: opts.tokens })).stats.tokensPerSec);
      for (let d = 0; d < decoders.length; d++) {
        const out = await decoders[d].decode(model, prompts[p], opts.tokens);
        tps[d].push(out.stats.tokensPerSec);
        const acc = pooled[d];
        if (JSON.stringify(out.tokens) !== JSON.stringify(reference[p])) acc.identical = false;
        if (r === 0) {
          acc.tokens += out.stats.newTokens;
          acc.forwards += out.stats.forwards;
          out.stats.attempts.forEach((a, i) => (acc.attempts[i] = (acc.attempts[i] ?? 0) + a));
          out.stats.accepts.forEach((a, i) => (acc.accepts[i] = (acc.accepts[i] ?? 0) + a));
        }
      }
    }
  }
  const ar = median(arTps);
  return decoders.map((d, i) => ({
    label: d.label,
    tau: pooled[i].tokens / pooled[i].forwards,
    alpha: pooled[i].attempts.map((a, j) => (a > 0 ? pooled[i].accepts[j] / a : NaN)),
    tokensPerSec: median(tps[i]),
    arTokensPerSec: ar,
    speedup: median(tps[i]) / ar,
    identical: pooled[i].identical,
  }));
}
