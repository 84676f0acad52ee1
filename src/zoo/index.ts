/** The model zoo (Node only): float16 weights with a manifest, exported from checkpoints, loaded with verification. */
export { exportZooModel, valLossAt, writeZooEntry } from './export';
export type { ExportOptions, ZooEntryMeta, ZooParam } from './export';
export { float16Bits, float16Value, fromFloat16, toFloat16, FLOAT16_MAX, FLOAT16_MIN_NORMAL } from './float16';
export { listZooModels, loadZooModel, readZooWeights, zooCheckpoint } from './load';
export type { ZooListing, ZooModel, ZooOptions } from './load';
export { describeMachine } from './machine';
export { checkZooName, DEFAULT_ZOO_DIR, MANIFEST_FILE, manifestPath, readManifest, WEIGHTS_FILE, writeManifest, ZOO_FORMAT } from './manifest';
export type { ZooEntry, ZooManifest, ZooShared, ZooTensor, ZooValLoss } from './manifest';
