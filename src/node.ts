/** mtp-lab for Node: everything in the browser-safe API plus corpora, checkpoints and training runs. */
export * from './index';
export { loadCorpus, verifyFile } from './data/corpus';
export type { Corpus, LoadCorpusOptions } from './data/corpus';
export { saveCheckpoint, readCheckpoint, loadParams, configDiff, trainerStateOf } from './train/checkpoint';
export type { Checkpoint, CheckpointHeader } from './train/checkpoint';
export { trainRun, loadModel, prepareData, CHECKPOINT_FILE } from './train/run';
export type { RunOptions, RunResult } from './train/run';
export { selfDistillTokens, generateBatch } from './train/self_distill';
export { FigureWriter, writeFigure, writeCsv } from './plot/write';
export { showFigure, closeFigureBrowser } from './plot/notebook';
export * from './zoo/index';
