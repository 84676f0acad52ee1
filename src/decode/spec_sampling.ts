/**
 * Speculative sampling with self-drafting heads (Leviathan et al. 2023, Chen et al. 2023): lossless at
 * temperature > 0 — the output has exactly the distribution of sampling from the model's next-token
 * head alone.
 *
 * With p the target (next-token head) distribution and q the drafting head's, both after the same
 * temperature / top-k / top-p:
 * - the first token of a step is sampled from p itself (it is the previous step's bonus or correction);
 * - drafts x_j ~ q_j, where q_j is head j's distribution at the last committed position;
 * - one forward over the block gives p after every prefix; draft x_j is accepted with probability
 *   min(1, p(x_j)/q_j(x_j)); on rejection a token is drawn from norm(max(0, p − q_j)) and the step ends;
 * - after the last accepted token the next step's first token is drawn from p (the bonus).
 * Works for every model whose decodeLogits rows are "head i predicts x[t+i+1]": parallel heads and a
 * Medusa chain. Seeded: the same seed repeats a run exactly. Temperature 0 is greedy blockwise decoding.
 * Sequential models, whose modules draft one after another, go to decode/sequential_sampling.ts.
 */
import type { MtpModel } from '../model/create';
import type { SequentialModel } from '../model/sequential';
import { Rng } from '../util/rng';
import { roomInWindow } from './context';
import { AcceptanceRule, leviathanAcceptance, residual } from './acceptance';
import { checkDecodeArgs, HeadsSession } from './heads_session';
import { SamplingConfig, sampleIndex, tokenDistribution, validateSampling } from './sampling';
import { sequentialSpeculativeSample } from './sequential_sampling';
import { finishStats, SpeculativeStats, speculativeStats } from './stats';

export { leviathanAcceptance, naiveAcceptance, residual } from './acceptance';
export type { AcceptanceRule } from './acceptance';

export interface SpecSamplingOptions extends Partial<SamplingConfig> {
  maxNewTokens: number;
  /** Heads used for drafting (default: all). */
  k?: number;
  seed?: number;
  acceptance?: AcceptanceRule;
}

export interface SpecSamplingResult {
  tokens: number[];
  stats: SpeculativeStats;
  steps: number[];
}


export async function speculativeSample(model: MtpModel, prompt: number[], opts: SpecSamplingOptions): Promise<SpecSamplingResult> {
  if (model.config.mtp.kind === 'sequential') return sequentialSpeculativeSample(model as SequentialModel, prompt, opts);
  const s: SamplingConfig = { temperature: opts.temperature ?? 1, topK: opts.topK ?? 0, topP: opts.topP ?? 1 };
  validateSampling(s);
  const k = opts.k ?? model.k;
  checkDecodeArgs('speculative sampling', model, prompt, opts.maxNewTokens, k);
  const accept = opts.acceptance ?? leviathanAcceptance;
  const rng = new Rng(opts.seed ?? 0);
  const V = model.config.vocabSize;
  const session = new HeadsSession(model, prompt, k);
  const seq = session.seq;
  const end = prompt.length + opts.maxNewTokens;
  const attempts = new Array(k - 1).fill(0);
  const accepts = new Array(k - 1).fill(0);
  const steps: number[] = [];
  const t0 = performance.now();

  /** One forward; logits of heads 0..k−1 at the last n fed positions (rows [head][j]), in one host read. */
  const forward = async (block: number[], n: number): Promise<Float32Array[][]> => {
    const last = session.forward(block, n); // [k, n, V]
    const flat = (await last.data()) as Float32Array;
    last.dispose();
    return Array.from({ length: k }, (_, i) => Array.from({ length: n }, (_, j) => flat.subarray((i * n + j) * V, (i * n + j + 1) * V)));
  };

  try {
    if (opts.maxNewTokens > 0) {
      let rows = await forward([], 1);
      let at = 0; // position (within rows) of the last committed token
      let first = sampleIndex(tokenDistribution(rows[0][at], s), rng);
      while (seq.length < end) {
        const remaining = end - seq.length;
        if (remaining === 1) {
          session.commit([first]);
          steps.push(1);
          break;
        }
        const kk = Math.min(k, remaining, roomInWindow(seq.length + 1, model.config.blockSize));
        const q = Array.from({ length: kk }, (_, j) => (j === 0 ? null : tokenDistribution(rows[j][at], s)));
        const block = [first, ...q.slice(1).map((qj) => sampleIndex(qj!, rng))];
        rows = await forward(block, kk);
        let a = 1;
        let next = -1;
        while (a < kk) {
          attempts[a - 1] += 1;
          const p = tokenDistribution(rows[0][a - 1], s); // target after x_1..x_a
          const x = block[a];
          if (rng.next() < accept(p, q[a]!, x)) {
            accepts[a - 1] += 1;
            a += 1;
          } else {
            next = sampleIndex(residual(p, q[a]!), rng);
            break;
          }
        }
        session.commit(block.slice(0, a));
        steps.push(a);
        at = a - 1;
        first = next >= 0 ? next : sampleIndex(tokenDistribution(rows[0][at], s), rng);
      }
    }
  } finally {
    session.dispose();
  }
  const base = finishStats(`speculative sampling k=${k}`, seq.length - prompt.length, session.forwards, performance.now() - t0);
  return { tokens: seq.slice(prompt.length), stats: speculativeStats(base, attempts, accepts), steps };
}
