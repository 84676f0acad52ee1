/**
 * Will a training run fit in memory? An estimate made before anything is allocated, so a config that cannot fit
 * (e.g. `--mtp.k=1000` on a nano trunk, or a batch far too large) is refused with the numbers instead of swapping
 * for minutes or dying inside the wasm heap.
 *
 * Bytes ≈ parameters × 16 (float32 weights, gradients and two Adam moments)
 *       + activations kept for the backward pass, per block of the trunk and of the heads:
 *           B·T·C·(10 + 3·mlpRatio) floats (norms, q/k/v, attention output, MLP hidden before and after GELU)
 *           + 2·B·H·T² floats (attention scores and probabilities)
 *       + logits, their softmax and gradient for every predicted token: 3·B·T·V·k floats.
 * The allocator's peak also holds the tape's temporaries: on wasm it measured 2.2–2.9× that sum (nano trunk, parallel
 * k = 50 to 1000), so the estimate is the sum × PEAK_FACTOR.
 */
import * as os from 'node:os';
import { blockParamCount, Config, countParams } from '../config';
import { mtpBlockParams, mtpTokens } from '../mtp_config';

/**
 * What tfjs-backend-wasm (4.22) can use, whatever the machine has: its heap may grow to 4 GiB, but tensors placed past
 * 2 GiB are read back wrong (offsets taken as signed 32-bit numbers), which surfaces as a nonsense GatherV2 error.
 */
export const WASM_HEAP_MAX = 2 ** 31;

/** Measured peak ÷ the sum of weights, gradients, Adam moments, activations and logits (see the file comment). */
export const PEAK_FACTOR = 2.5;

export interface MemoryEstimate {
  params: number;
  /** Weights, gradients and Adam moments (the parts below are before PEAK_FACTOR; `total` after). */
  paramBytes: number;
  activationBytes: number;
  logitBytes: number;
  total: number;
}

/** Estimated peak bytes of one training step of `config` (see the file comment). */
export function trainingMemory(config: Config): MemoryEstimate {
  const m = config.model;
  const { batchSize: B } = config.train;
  const T = m.blockSize;
  const C = m.nEmbd;
  const params = countParams(m);
  const block = blockParamCount(m);
  const blocks = Math.max(m.nLayer, mtpBlockParams(m.mtp, { nLayer: m.nLayer, nEmbd: C, vocabSize: m.vocabSize, block }) / block);
  const perBlock = B * T * C * (10 + 3 * m.mlpRatio) + 2 * B * m.nHead * T * T;
  const paramBytes = 16 * params;
  const activationBytes = 4 * blocks * perBlock;
  const logitBytes = 4 * 3 * B * T * m.vocabSize * mtpTokens(m.mtp);
  return { params, paramBytes, activationBytes, logitBytes, total: PEAK_FACTOR * (paramBytes + activationBytes + logitBytes) };
}

/** Bytes a run may use: 80 % of the machine's memory, and the wasm heap's 4 GiB on the wasm backend. */
export function memoryBudget(backend: string): { bytes: number; why: string } {
  const ram = 0.8 * os.totalmem();
  if (backend === 'wasm' && WASM_HEAP_MAX < ram) return { bytes: WASM_HEAP_MAX, why: 'what the wasm backend can address: 2 GiB' };
  return { bytes: ram, why: `80 % of this machine’s ${gb(os.totalmem())} of memory` };
}

export function gb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${Math.round(bytes / 1e6)} MB`;
}

/**
 * Throws when the estimate exceeds the budget, with the numbers and what to change; `override` (the CLI's
 * `--allow-large`) skips the check.
 */
export function checkFits(config: Config, backend: string, override = false): MemoryEstimate {
  const e = trainingMemory(config);
  const budget = memoryBudget(backend);
  if (override || e.total <= budget.bytes) return e;
  const m = config.model;
  throw new Error(
    `this config needs about ${gb(e.total)} to train, more than ${gb(budget.bytes)} (${budget.why}): ` +
      `${e.params.toLocaleString('en-US')} parameters × 16 bytes (weights, gradients, Adam) = ${gb(e.paramBytes)}, ` +
      `activations ${gb(e.activationBytes)} and logits ${gb(e.logitBytes)}, × ${PEAK_FACTOR} for the peak, for batch ${config.train.batchSize} × ` +
      `${m.blockSize} tokens, ${mtpTokens(m.mtp)} predicted per position. Lower train.batchSize, model.blockSize, ` +
      `model.nEmbd or the variant's depth (model.mtp.*), or pass --allow-large to try anyway.`,
  );
}
