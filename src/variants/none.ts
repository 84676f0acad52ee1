/** The plain next-token model: the baseline every variant is compared with. */
import type { VariantSpec } from './spec';

export interface NoMtp {
  kind: 'none';
}

export const none: VariantSpec<NoMtp> = {
  defaults: { kind: 'none' },
  docs: {},
  errors: () => [],
  blockParams: (_m, t) => t.nLayer * t.block,
  tokens: () => 1,
  decoder: null,
};
