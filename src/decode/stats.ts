/** Statistics every decoder reports, with the Spec-Bench conventions of docs/algorithms.md, metrics. */
export interface DecodeStats {
  /** Decoder name, e.g. 'greedy', 'sample', 'blockwise'. */
  method: string;
  /** Tokens generated (the prompt excluded). */
  newTokens: number;
  /** Model forwards run: the prefill (which yields the first token), every decoding or verification forward. */
  forwards: number;
  /** τ: tokens committed per forward, counting the bonus token (AR = 1 exactly). */
  tau: number;
  /** Wall-clock milliseconds for the whole generation (prefill included). */
  ms: number;
  tokensPerSec: number;
}

export interface DecodeResult {
  /** The generated tokens (without the prompt). */
  tokens: number[];
  stats: DecodeStats;
}

/** Fills the derived fields. */
export function finishStats(method: string, newTokens: number, forwards: number, ms: number): DecodeStats {
  return {
    method,
    newTokens,
    forwards,
    tau: forwards > 0 ? newTokens / forwards : 0,
    ms,
    tokensPerSec: ms > 0 ? (newTokens * 1000) / ms : 0,
  };
}

/** Speculative decoders also report how often each draft position was accepted. */
export interface SpeculativeStats extends DecodeStats {
  /** Per draft position i = 1.. (0 = the always-certain first token, left out): drafts offered with all earlier ones accepted. */
  attempts: number[];
  /** …and of those, accepted. */
  accepts: number[];
  /**
   * αᵢ = accepts / attempts: P(draft i accepted | drafts < i accepted), docs/algorithms.md, metrics. NaN where never
   * attempted.
   */
  alpha: number[];
}

/** Adds αᵢ to the counts. */
export function speculativeStats(base: DecodeStats, attempts: number[], accepts: number[]): SpeculativeStats {
  return { ...base, attempts, accepts, alpha: attempts.map((a, i) => (a > 0 ? accepts[i] / a : NaN)) };
}
