/** Statistics every decoder reports, with the Spec-Bench conventions of DESIGN §4.8. */
export interface DecodeStats {
  /** Decoder name, e.g. 'greedy', 'sample', 'blockwise'. */
  method: string;
  /** Tokens generated (the prompt excluded). */
  newTokens: number;
  /** Model forwards run, prefill and re-encodes after a context slide included. */
  forwards: number;
  /** Forwards that decoded (verification forwards for speculative decoders; prefill excluded). */
  decodeForwards: number;
  /** τ: tokens committed per decoding forward, counting the bonus token (AR = 1). */
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
export function finishStats(method: string, newTokens: number, forwards: number, decodeForwards: number, ms: number): DecodeStats {
  return {
    method,
    newTokens,
    forwards,
    decodeForwards,
    tau: decodeForwards > 0 ? newTokens / decodeForwards : 0,
    ms,
    tokensPerSec: ms > 0 ? (newTokens * 1000) / ms : 0,
  };
}
