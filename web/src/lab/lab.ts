/**
 * The lab's state inside the worker: the active backend, the loaded model and its tokenizer, and the runs on them
 * (decoding side by side with AR, nano training, the backend check). Every model, drafter and decoder is the
 * library's (src/); this file only sequences them and reports each step.
 */
import * as tf from '@tensorflow/tfjs';
import { BackendInfo, initBackend } from '../../../src/backend/index';
import { Config, MTP_DECODER, mtpTokens } from '../../../src/config';
import { greedyAcceptance, speculativeAcceptance } from '../../../src/decode/acceptance';
import { DecodeSession } from '../../../src/decode/engine';
import { ByteTokenizer, Tokenizer, tokenizerFromSpec, TokenizerSpec } from '../../../src/data/tokenizer';
import { assignParams, NamedValues } from '../../../src/model/assign_params';
import { createModel } from '../../../src/model/create';
import type { MtpModel } from '../../../src/model/mtp_model';
import { modelFromCheckpointBytes } from '../../../src/train/checkpoint_bytes';
import type { ZooManifest } from '../../../src/zoo/manifest';
import { checkManifest, sharedBase, zooModelFromBytes } from '../../../src/zoo/weights';
import { webRankSpawner } from '../../../src/train/data_parallel_web';
import { sharedMemoryUnavailable } from '../../../src/train/shared_memory';
import { PARALLEL_BACKENDS } from '../../../src/train/worker_count';
import type { CheckResult, DecodeRequest, DecodeResult, LabBackend, LaneResult, LaneStats, ModelSummary, StepEvent, TrainEvent, TrainRequest, TrainResult } from '../protocol';
import { nanoCheck } from './check';
import { drafterFor, laneName, ruleFor } from './choices';
import { trainNano } from './nano_train';

interface Loaded {
  model: MtpModel;
  tokenizer: Tokenizer;
  summary: ModelSummary;
}

/** One lane of a decoding run: a session and its wall time so far. */
interface Lane {
  name: 'draft' | 'ar';
  method: string;
  session: DecodeSession;
  ms: number;
  step: number;
}

const yieldToMessages = () => new Promise((resolve) => setTimeout(resolve, 0));

function summarize(label: string, model: MtpModel, tokenizer: TokenizerSpec, corpus?: string): ModelSummary {
  const c = model.config;
  const parameters = [...model.params.values()].reduce((a, v) => a + v.size, 0);
  return { label, kind: c.mtp.kind, k: mtpTokens(c.mtp), parameters, blockSize: c.blockSize, nLayer: c.nLayer, nEmbd: c.nEmbd, tokenizer, ownDecoder: MTP_DECODER[c.mtp.kind], corpus };
}

function laneStats(lane: Lane): LaneStats {
  const s = lane.session.stats(lane.method, lane.ms);
  return { method: lane.method, generated: s.newTokens, forwards: s.forwards, tau: s.tau, alpha: s.alpha, tokensPerSec: s.tokensPerSec, ms: lane.ms };
}

export interface LabOptions {
  /** The script of the data-parallel ranks' workers (the lab worker's own: it serves that role too, see worker.ts). */
  rankScript: string;
}

export class Lab {
  private loaded: Loaded | null = null;
  private stopRequested = false;
  private wasmPath = '';

  constructor(private readonly options: LabOptions) {}

  /** Where tfjs-backend-wasm's binaries are served (a URL ending in '/'). */
  setWasmPath(url: string): void {
    this.wasmPath = url;
  }

  /** Switches the backend; a loaded model moves with its weights. */
  async init(backend: LabBackend): Promise<BackendInfo> {
    const moving = this.loaded !== null && tf.getBackend() !== backend;
    const weights = moving ? await this.readWeights(this.loaded!.model) : null;
    // WebGL: shapes as uniforms, so a KV cache that grows each step reuses its shaders instead of compiling new ones.
    if (backend === 'webgl') tf.env().set('WEBGL_USE_SHAPES_UNIFORMS', true);
    const info = await initBackend(backend, this.wasmPath ? { wasmPath: this.wasmPath } : {});
    if (this.loaded && weights) {
      const old = this.loaded.model;
      const model = createModel(old.config);
      assignParams(weights, model.params, this.loaded.summary.label);
      old.dispose();
      this.loaded = { ...this.loaded, model };
    }
    return info;
  }

  /** Loads a zoo model from the served zoo folder `base` (a URL ending in '/'), checking its sha256. */
  async loadZoo(base: string, name: string): Promise<ModelSummary> {
    const manifestUrl = new URL('manifest.json', base).href;
    const manifest: ZooManifest = checkManifest(await fetchJson(manifestUrl), manifestUrl);
    const entry = manifest.models[name];
    if (!entry) throw new Error(`no model '${name}' in ${manifestUrl}; it holds: ${Object.keys(manifest.models).sort().join(', ')}`);
    const remedy = 'rebuild the page (npm run lab:build) from a clean checkout';
    const url = new URL(entry.weights, base).href;
    const shared = sharedBase(name, entry, manifest, manifestUrl); // a frozen trunk lives in its base model's file
    const sharedUrl = shared && new URL(shared.entry.weights, base).href;
    const [bytes, sharedBytes] = await Promise.all([fetchBytes(url), sharedUrl ? fetchBytes(sharedUrl) : undefined]);
    const model = await zooModelFromBytes(
      name,
      entry,
      bytes,
      { file: url, manifest: manifestUrl, remedy },
      shared && { ...shared, bytes: sharedBytes!, source: { file: sharedUrl!, manifest: manifestUrl, remedy } },
    );
    return this.use(model, tokenizerFromSpec(entry.tokenizer), summarize(`zoo:${name}`, model, entry.tokenizer, entry.config.train.corpus));
  }

  /** Loads a checkpoint file written by the CLI (`MTPLAB-CKPT 2`), checking its sha256s. */
  async loadCheckpoint(name: string, bytes: ArrayBuffer): Promise<ModelSummary> {
    const { model, checkpoint } = await modelFromCheckpointBytes(new Uint8Array(bytes), name);
    const spec = checkpoint.header.tokenizer;
    return this.use(model, tokenizerFromSpec(spec), summarize(`file:${name}`, model, spec, (checkpoint.config as Config).train?.corpus));
  }

  /**
   * Trains a model (nano unless the request names another preset) on the active backend, with `req.workers`
   * data-parallel ranks (this worker and Web Workers beside it, on the same backend); it becomes the loaded model.
   */
  async train(req: TrainRequest, emit: (e: TrainEvent) => void): Promise<TrainResult> {
    this.stopRequested = false;
    const backend = tf.getBackend();
    const workers = req.workers ?? 1;
    if (!(Number.isInteger(workers) && workers >= 1)) throw new Error(`workers must be an integer ≥ 1, got ${workers}`);
    if (workers > 1) {
      const why = sharedMemoryUnavailable();
      if (why !== null) throw new Error(`${workers} workers cannot train here: ${why}; train with 1 worker`);
      if (!PARALLEL_BACKENDS.includes(backend)) throw new Error(`${workers} workers need the wasm or cpu backend (training runs on ${backend}): choose wasm, or train with 1 worker`);
    }
    const spawn = webRankSpawner({ script: this.options.rankScript, backend: this.wasmPath ? { wasmPath: this.wasmPath } : {}, faultStep: req.faultStep });
    const { model, weights } = await trainNano(req, emit, () => this.stopRequested, { backend, spawn });
    const summary = this.use(model, new ByteTokenizer(), summarize(`${req.preset ?? 'nano'} ${req.kind} (trained here)`, model, { kind: 'byte' }, req.corpus));
    return { model: summary, workers, weights };
  }

  stop(): void {
    this.stopRequested = true;
  }

  /** Decodes with the request's decoder (and AR beside it), one event per step of each lane. */
  async decode(req: DecodeRequest, emit: (e: StepEvent) => void): Promise<DecodeResult> {
    const { model, tokenizer } = this.need();
    this.stopRequested = false;
    const prompt = Array.from(tokenizer.encode(req.prompt));
    if (prompt.length === 0) throw new Error('the prompt is empty: type at least one character');
    if (!(Number.isInteger(req.maxNewTokens) && req.maxNewTokens >= 1)) throw new Error(`tokens to generate must be an integer ≥ 1, got ${req.maxNewTokens}`);
    const rule = ruleFor(req);
    const lanes: Lane[] = [];
    try {
      const drafter = drafterFor(model, req);
      lanes.push({ name: 'draft', method: laneName(model, req), session: new DecodeSession(model, drafter, prompt, { acceptance: rule, seed: req.seed, profile: req.profile }), ms: 0, step: 0 });
      if (req.compare) {
        const s = rule.sampling;
        const arRule = s.temperature === 0 ? greedyAcceptance() : speculativeAcceptance(s);
        lanes.push({ name: 'ar', method: s.temperature === 0 ? 'AR greedy' : 'AR sampled', session: new DecodeSession(model, null, prompt, { acceptance: arRule, seed: req.seed, profile: req.profile }), ms: 0, step: 0 });
      }
      const end = prompt.length + req.maxNewTokens;
      while (!this.stopRequested && lanes.some((l) => l.session.seq.length < end)) {
        for (const lane of lanes) {
          if (lane.session.seq.length >= end) continue;
          const t0 = performance.now();
          const r = await lane.session.step(end - lane.session.seq.length);
          const ms = performance.now() - t0;
          lane.ms += ms;
          emit({ kind: 'step', lane: lane.name, step: lane.step++, tree: { tokens: r.tree.tokens, parents: r.tree.parents }, path: r.verdict.path, committed: r.committed, ms, stats: laneStats(lane) });
          await yieldToMessages();
        }
      }
      const result = (lane: Lane): LaneResult => {
        const tokens = lane.session.seq.slice(prompt.length);
        return { ...laneStats(lane), tokens, text: tokenizer.decode(tokens), steps: [...lane.session.steps], ...(req.profile ? { profile: { ...lane.session.profile } } : {}) };
      };
      const draft = result(lanes[0]);
      const ar = lanes[1] ? result(lanes[1]) : undefined;
      return {
        promptTokens: prompt,
        draft,
        ar,
        identical: ar ? JSON.stringify(ar.tokens) === JSON.stringify(draft.tokens) : null,
        mustMatch: rule.lossless && rule.sampling.temperature === 0,
        stopped: this.stopRequested,
      };
    } finally {
      for (const lane of lanes) lane.session.dispose();
    }
  }

  /** The cross-backend check (check.ts) on `backend`; the loaded model stays. */
  async check(backend: LabBackend, kind: Parameters<typeof nanoCheck>[0], seed: number): Promise<CheckResult> {
    const info = await this.init(backend);
    return { backend: info.name, detail: info.detail, ...(await nanoCheck(kind, seed)) };
  }

  private need(): Loaded {
    if (!this.loaded) throw new Error('no model is loaded: pick a zoo model, open a checkpoint, or train a nano model first');
    return this.loaded;
  }

  private use(model: MtpModel, tokenizer: Tokenizer, summary: ModelSummary): ModelSummary {
    this.loaded?.model.dispose();
    this.loaded = { model, tokenizer, summary };
    return summary;
  }

  private async readWeights(model: MtpModel): Promise<Map<string, NamedValues>> {
    const out = new Map<string, NamedValues>();
    for (const [name, v] of model.params) out.set(name, { shape: v.shape, values: (await v.data()) as Float32Array });
    return out;
  }
}

async function fetchOk(url: string): Promise<Response> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`could not load ${url}: HTTP ${res.status} ${res.statusText}`);
  return res;
}

async function fetchJson(url: string): Promise<unknown> {
  return (await fetchOk(url)).json();
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  return new Uint8Array(await (await fetchOk(url)).arrayBuffer());
}
