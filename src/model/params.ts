/**
 * Trainable parameters of the reference transformer, created from a seeded stream.
 *
 * The creation order and the init (normal std 0.02, residual projections std/sqrt(2·nLayer), norms
 * at 1/0, biases 0) follow bench/torch_twin.py exactly, so the same seed gives bit-identical
 * weights in TF.js and PyTorch and losses can be compared as golden values.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../config';
import { Rng } from '../util/rng';

/** Named parameters; names are stable (checkpoints use them), variables get a unique prefix. */
export type ParamMap = Map<string, tf.Variable>;

let modelCounter = 0;

/** A unique prefix for a model's tf.Variable names (tfjs refuses two variables of one name). */
export function nextScope(kind: string): string {
  modelCounter += 1;
  return `${kind}${modelCounter}`;
}

/**
 * Adds parameters to a map, drawing normal inits from one Rng stream in call order.
 * `fill` makes a constant tensor without consuming randomness (as the twin does).
 */
export class ParamFactory {
  constructor(
    readonly params: ParamMap,
    readonly rng: Rng,
    readonly scope: string,
    readonly trainable = true,
  ) {}

  add(name: string, shape: number[], std: number, fill?: number): tf.Variable {
    if (this.params.has(name)) throw new Error(`parameter '${name}' defined twice`);
    const n = shape.reduce((a, b) => a * b, 1);
    const data = fill !== undefined ? new Float32Array(n).fill(fill) : this.rng.normal(n, std);
    const v = tf.tidy(() => tf.variable(tf.tensor(data, shape, 'float32'), this.trainable, `${this.scope}/${name}`)); // tidy frees the initial tensor
    this.params.set(name, v);
    return v;
  }
}

/** Names of one block's parameters, with `p` the layer prefix (e.g. 'l0.'). */
export function addBlockParams(f: ParamFactory, p: string, C: number, hidden: number, std: number, residStd: number): void {
  f.add(`${p}ln1g`, [C], 0, 1);
  f.add(`${p}ln1b`, [C], 0, 0);
  f.add(`${p}wqkv`, [C, 3 * C], std);
  f.add(`${p}wo`, [C, C], residStd);
  f.add(`${p}ln2g`, [C], 0, 1);
  f.add(`${p}ln2b`, [C], 0, 0);
  f.add(`${p}w1`, [C, hidden], std);
  f.add(`${p}b1`, [hidden], 0, 0);
  f.add(`${p}w2`, [hidden, C], residStd);
  f.add(`${p}b2`, [C], 0, 0);
}

/** The trunk: embeddings, nLayer blocks, final norm, unembedding (untied unless configured). */
export function createTrunkParams(cfg: ModelConfig, f: ParamFactory): void {
  const { vocabSize: V, nEmbd: C, blockSize: T, nLayer: L } = cfg;
  const residStd = cfg.initStd / Math.sqrt(2 * L);
  f.add('tokEmb', [V, C], cfg.initStd);
  f.add('posEmb', [T, C], cfg.initStd);
  for (let l = 0; l < L; l++) addBlockParams(f, `l${l}.`, C, cfg.mlpRatio * C, cfg.initStd, residStd);
  f.add('lnfg', [C], 0, 1);
  f.add('lnfb', [C], 0, 0);
  if (!cfg.tieEmbeddings) f.add('head', [C, V], cfg.initStd);
}
