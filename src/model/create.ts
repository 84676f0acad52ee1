/**
 * One factory for every variant. Each variant exposes the same operations (MtpModel: loss, gradients,
 * the verification forward and its own drafter), so trainers, decoders and experiments treat them alike
 * and never branch on the kind.
 */
import type { ModelConfig, MtpConfig, MtpKind } from '../config';
import { validateModel } from '../config';
import { FeatureModel } from './feature';
import { MedusaModel } from './medusa';
import type { MtpModel } from './mtp_model';
import { ParallelModel } from './parallel';
import { SequentialModel } from './sequential';

export type { DecodeOptions, LossAndGrads, LossOutput, MtpModel } from './mtp_model';
export { jointLossAndGrads } from './mtp_model';

/** Each variant's constructor (its model module holds the model and its drafter). */
const CONSTRUCTORS: { [K in MtpKind]: (config: ModelConfig, mtp: Extract<MtpConfig, { kind: K }>) => MtpModel } = {
  none: (config) => new ParallelModel(config, { kind: 'parallel', k: 1, headLayers: 1, matchParams: false, headWeights: [] }), // the k = 1 trunk
  parallel: (config, mtp) => new ParallelModel(config, mtp),
  sequential: (config, mtp) => new SequentialModel(config, mtp),
  medusa: (config, mtp) => new MedusaModel(config, mtp),
  feature: (config, mtp) => new FeatureModel(config, mtp),
};

/** Builds the model a config describes. */
export function createModel(config: ModelConfig): MtpModel {
  validateModel(config);
  const build = CONSTRUCTORS[config.mtp.kind] as (config: ModelConfig, mtp: MtpConfig) => MtpModel;
  return build(config, config.mtp);
}
