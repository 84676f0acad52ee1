/**
 * AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, applied to matrices only
 * (rank ≥ 2), not to norm gains and biases. tfjs ships Adam without decoupled decay, hence this
 * small optimiser. Epsilon is always explicit (webgl would otherwise pick 1e-4).
 */
import * as tf from '@tensorflow/tfjs';
import { disposeFusedAdamW, fusedAdamW, fusedGlobalNorm } from '../backend/webgpu_train_adamw';

export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** Optimiser state as plain arrays, for checkpoints. */
export interface AdamWState {
  t: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export class AdamW {
  /** Steps taken (for bias correction). */
  t = 0;
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();

  /**
   * params: stable name → variable (names key the saved state); lrScale: optional per-parameter
   * learning-rate multiplier (e.g. Medusa-2's faster heads), 1 where absent.
   */
  constructor(
    readonly params: Map<string, tf.Variable>,
    readonly cfg: AdamWConfig,
    readonly lrScale: Map<string, number> = new Map(),
  ) {
    for (const [name, p] of params) {
      this.m.set(name, tf.tidy(() => tf.variable(tf.zerosLike(p), false))); // tidy frees the zeros it copies
      this.v.set(name, tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
    }
  }

  /**
   * One update. grads are keyed by tf.Variable name (as tf.variableGrads returns them); every
   * gradient is multiplied by `gradScale` first (global-norm clipping).
   */
  apply(grads: tf.NamedTensorMap, lr: number, gradScale: tf.Scalar): void {
    this.t += 1;
    const { beta1, beta2, eps, weightDecay } = this.cfg;
    const bc1 = 1 - beta1 ** this.t;
    const bc2 = 1 - beta2 ** this.t;
    // on webgpu: one program for every parameter (backend/webgpu_train_adamw.ts), the same arithmetic
    if (fusedAdamW(this, this.params, { m: this.m, v: this.v }, grads, gradScale, { lr, beta1, beta2, eps, weightDecay, bc1, bc2 }, this.lrScale)) return;
    tf.tidy(() => {
      for (const [name, p] of this.params) {
        const raw = grads[p.name];
        if (!raw) continue;
        const g = tf.mul(raw, gradScale);
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        m.assign(tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)));
        v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)));
        let update = tf.div(tf.div(m, bc1), tf.add(tf.sqrt(tf.div(v, bc2)), eps));
        if (weightDecay > 0 && p.rank >= 2) update = tf.add(update, tf.mul(p, weightDecay));
        p.assign(tf.sub(p, tf.mul(update, lr * (this.lrScale.get(name) ?? 1))));
      }
    });
  }

  /** The global norm ‖g‖₂ of the gradients (keyed by variable name), for clipping. */
  globalNorm(grads: tf.NamedTensorMap): tf.Scalar {
    const fused = fusedGlobalNorm(this, this.params, grads);
    if (fused) return fused;
    // Σ of squares added pairwise: one addN over every gradient exceeds WebGPU's binding limit in compatibility mode.
    return tf.tidy(() => tf.sqrt(Object.values(grads).map((g) => tf.sum(tf.square(g))).reduce((a, b) => tf.add(a, b))) as tf.Scalar);
  }

  async state(): Promise<AdamWState> {
    const read = async (vars: Map<string, tf.Variable>) => {
      const out = new Map<string, Float32Array>();
      for (const [name, t] of vars) out.set(name, (await t.data()) as Float32Array);
      return out;
    };
    return { t: this.t, m: await read(this.m), v: await read(this.v) };
  }

  /** Restores a saved state; every moment must be present with the parameter's size. */
  load(state: AdamWState): void {
    for (const [moments, saved, label] of [[this.m, state.m, 'm'], [this.v, state.v, 'v']] as const) {
      for (const [name, variable] of moments) {
        const data = saved.get(name);
        if (!data || data.length !== variable.size) {
          throw new Error(`optimizer state '${label}.${name}' is missing or has ${data?.length ?? 0} values, expected ${variable.size}`);
        }
        tf.tidy(() => variable.assign(tf.tensor(data, variable.shape, 'float32')));
      }
    }
    this.t = state.t;
  }

  dispose(): void {
    disposeFusedAdamW(this);
    for (const t of [...this.m.values(), ...this.v.values()]) t.dispose();
  }
}
