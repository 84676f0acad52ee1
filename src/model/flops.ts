/**
 * FLOP counts for throughput and MFU (PaLM, Chowdhery et al. 2022, appendix B convention):
 * a forward costs 2 FLOPs per matmul weight per token plus attention's QKᵀ and AV products
 * (2 · 2 · S · C per layer and token for S attended positions); training costs 3 × forward.
 * Norms, softmax and element-wise ops are not counted.
 */
import type { ModelConfig } from '../config';

/** Forward FLOPs per token at attended length S (default: the full context). */
export function forwardFlopsPerToken(cfg: ModelConfig, S = cfg.blockSize): number {
  const C = cfg.nEmbd;
  const hidden = cfg.mlpRatio * C;
  const perLayer = C * 3 * C + C * C + 2 * C * hidden; // qkv, out-projection, MLP
  const matmulWeights = cfg.nLayer * perLayer + C * cfg.vocabSize; // + unembedding
  return 2 * matmulWeights + cfg.nLayer * 4 * S * C;
}

/** Training FLOPs per token (forward + backward = 3 × forward). */
export function trainFlopsPerToken(cfg: ModelConfig): number {
  return 3 * forwardFlopsPerToken(cfg);
}
