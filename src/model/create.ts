/**
 * One factory for every variant (DESIGN §3). Each variant exposes the same operations so trainers,
 * decoders and experiments treat them alike; only the algorithms that truly differ branch on kind.
 */
import type { ModelConfig } from '../config';
import { validateModel } from '../config';
import { MedusaModel } from './medusa';
import type { MtpModel } from './mtp_model';
import { ParallelModel } from './parallel';
import { SequentialModel } from './sequential';

export type { DecodeOptions, LossAndGrads, LossOutput, MtpModel } from './mtp_model';
export { jointLossAndGrads } from './mtp_model';

/** Builds the model a config describes. */
export function createModel(config: ModelConfig): MtpModel {
  validateModel(config);
  const m = config.mtp;
  switch (m.kind) {
    case 'none':
      return new ParallelModel(config, { kind: 'parallel', k: 1, headLayers: 1, matchParams: false, headWeights: [] });
    case 'parallel':
      return new ParallelModel(config, m);
    case 'sequential':
      return new SequentialModel(config, m);
    case 'medusa':
      return new MedusaModel(config, m);
    default:
      throw new Error(`mtp.kind '${(m as { kind: string }).kind}' has no model implementation in this build`);
  }
}
