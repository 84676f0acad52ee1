/**
 * Weights given as plain arrays (a zoo model's decoded float16, a checkpoint read from bytes) copied into a model's
 * variables, with every name and shape checked first. Browser-safe: no file access.
 */
import * as tf from '@tensorflow/tfjs';
import type { ParamMap } from './params';

/** One named parameter's values and shape. */
export interface NamedValues {
  shape: readonly number[];
  values: Float32Array;
}

/**
 * Assigns `weights` to `params`. Refuses, naming `what` and every problem, and without changing any weight: a missing
 * parameter, an unknown one, a shape that differs from the model's, or a length that does not match the shape.
 */
export function assignParams(weights: ReadonlyMap<string, NamedValues>, params: ParamMap, what: string): void {
  const problems: string[] = [];
  for (const [name, v] of params) {
    const w = weights.get(name);
    if (!w) problems.push(`parameter '${name}' is missing`);
    else if (JSON.stringify([...w.shape]) !== JSON.stringify(v.shape)) problems.push(`parameter '${name}' has shape [${w.shape}], the model needs [${v.shape}]`);
    else if (w.values.length !== v.size) problems.push(`parameter '${name}' holds ${w.values.length} values, its shape [${w.shape}] needs ${v.size}`);
  }
  for (const name of weights.keys()) if (!params.has(name)) problems.push(`unknown parameter '${name}'`);
  if (problems.length) throw new Error(`${what} does not fit the model:\n  - ${problems.join('\n  - ')}`);
  tf.tidy(() => {
    for (const [name, v] of params) v.assign(tf.tensor(weights.get(name)!.values, v.shape, 'float32'));
  });
}
