/**
 * Seeded randomness shared by weight init, batching and sampling.
 *
 * mulberry32 with the seed kept as a JS double (the same stream as the PyTorch twin in
 * bench/torch_twin.py), so weights and batches can be reproduced bit-for-bit outside TF.js.
 */

/** A uniform [0, 1) generator with its own state. */
export class Rng {
  private seed: number;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new Error(`Rng: seed must be a finite number, got ${seed}`);
    this.seed = seed;
  }

  /** Next uniform in [0, 1). */
  next(): number {
    this.seed += 0x6d2b79f5;
    const t = this.seed >>> 0;
    const a = Math.imul(t ^ (t >>> 15), t | 1) >>> 0;
    const b = Math.imul(a ^ (a >>> 7), a | 61) >>> 0;
    const t2 = (a ^ (a + b)) >>> 0;
    return ((t2 ^ (t2 >>> 14)) >>> 0) / 4294967296;
  }

  /** The generator's state, to save in a checkpoint and restore with `new Rng(state)`. */
  get state(): number {
    return this.seed;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** n normal samples with standard deviation std (Box-Muller, pairs cos/sin), as float32. */
  normal(n: number, std: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const u = Math.max(this.next(), 1e-12);
      const v = this.next();
      const r = Math.sqrt(-2 * Math.log(u));
      out[i] = r * Math.cos(2 * Math.PI * v) * std;
      if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v) * std;
    }
    return out;
  }

  /** A fresh generator derived from this one (for independent streams). */
  fork(): Rng {
    return new Rng(Math.floor(this.next() * 2 ** 31));
  }
}
