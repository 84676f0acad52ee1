/**
 * The lab page: wires the controls to the lab worker (client.ts → worker.ts) and draws what it reports: two decoding
 * lanes (the chosen decoder and AR) step by step, the current step's draft tree, live τ, αᵢ and tokens/s, whether
 * the outputs are identical, and the nano-training panel. Everything heavy runs in the worker; this thread only
 * draws, at most once per animation frame.
 */
import type { AcceptanceName } from '../../src/decode/acceptance';
import type { MtpKind } from '../../src/config';
import { median } from '../../src/util/median';
import { LabClient } from './client';
import { LAB_BACKENDS, LabBackend, LabDecoder, LabTree, DecodeRequest, DecodeResult, ModelSummary, StepEvent } from './protocol';
import { LaneView } from './ui/lane_view';
import { LossPlot } from './ui/loss_plot';
import { TokenText } from './ui/token_text';
import { drawTree } from './ui/tree_view';
import { WorkersControl } from './ui/workers_control';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const value = (id: string) => $<HTMLInputElement | HTMLSelectElement>(id).value;
const num = (id: string) => Number(value(id));

const PROMPTS: Record<string, string> = {
  code: 'export function parse(text: string): Node {\n  const ',
  prose: 'Call me Ishmael. Some years ago',
};
const NANO = '__nano__';
/** Rows per batch of the training panel's runs. */
const TRAIN_BATCH = 8;

const client = new LabClient();
const lanes = { draft: new LaneView($('lane-draft')), ar: new LaneView($('lane-ar')) };
const lossPlot = new LossPlot($('loss-plot'));
const workers = new WorkersControl($<HTMLInputElement>('train-workers'), $('train-workers-note'), TRAIN_BATCH);
let model: ModelSummary | null = null;

function message(text: string, error = false): void {
  const p = document.createElement('p');
  p.className = error ? 'error' : '';
  p.textContent = text;
  $('messages').prepend(p);
}

function setStatus(id: string, text: string, error = false): void {
  $(id).textContent = text;
  $(id).classList.toggle('error', error);
}

function setBusy(b: boolean): void {
  document.body.dataset.state = b ? 'busy' : 'idle';
  $<HTMLButtonElement>('generate').disabled = b || model === null;
  $<HTMLButtonElement>('stop').disabled = !b;
  $<HTMLButtonElement>('train-start').disabled = b;
  $<HTMLButtonElement>('train-stop').disabled = !b;
  for (const id of ['backend', 'model', 'ckpt']) $<HTMLInputElement>(id).disabled = b;
  workers.update(document.body.dataset.backend, b);
}

/** Runs one worker request with the controls locked; errors go to the messages panel. */
async function run<T>(what: string, job: () => Promise<T>): Promise<T | undefined> {
  setBusy(true);
  try {
    return await job();
  } catch (e) {
    message(`${what}: ${(e as Error).message}`, true);
    return undefined;
  } finally {
    setBusy(false);
  }
}

async function chooseBackend(name: LabBackend): Promise<boolean> {
  setStatus('backend-status', `starting ${name}…`);
  try {
    const info = await client.init(name);
    setStatus('backend-status', `${info.name}: ${info.detail}`);
    $<HTMLSelectElement>('backend').value = info.name;
    document.body.dataset.backend = info.name;
    return true;
  } catch (e) {
    setStatus('backend-status', `${name} is unavailable here: ${(e as Error).message}${document.body.dataset.backend ? `; still on ${document.body.dataset.backend}` : ''}`, true);
    if (document.body.dataset.backend) $<HTMLSelectElement>('backend').value = document.body.dataset.backend;
    return false;
  }
}

function showModel(m: ModelSummary): void {
  model = m;
  const what = m.kind === 'none' ? 'plain next-token model' : `${m.kind}, ${m.k} tokens per position (decoder: ${m.ownDecoder})`;
  setStatus('model-status', `${m.label}: ${what}; ${m.nLayer} blocks × ${m.nEmbd}, ${(m.parameters / 1e6).toFixed(2)} M parameters, context ${m.blockSize}`);
  const prompt = $<HTMLTextAreaElement>('prompt');
  if (!prompt.dataset.edited) prompt.value = PROMPTS[m.corpus ?? ''] ?? PROMPTS.prose;
  const own = $<HTMLSelectElement>('decoder').querySelector<HTMLOptionElement>('option[value="own"]')!;
  own.disabled = m.ownDecoder === null;
  own.textContent = m.ownDecoder ? `the model's own heads (${m.ownDecoder})` : "the model's own heads (none: plain model)";
  if (m.ownDecoder === null && value('decoder') === 'own') $<HTMLSelectElement>('decoder').value = 'lookup';
  document.body.dataset.model = m.label;
  $<HTMLButtonElement>('generate').disabled = document.body.dataset.state === 'busy';
}

async function loadZoo(name: string): Promise<void> {
  setStatus('model-status', `loading ${name}…`);
  const m = await run(`loading zoo model ${name}`, () => client.loadZoo(name));
  if (m) showModel(m);
  else setStatus('model-status', `could not load ${name}`, true);
}

function request(): DecodeRequest {
  const k = value('k').trim();
  return {
    prompt: $<HTMLTextAreaElement>('prompt').value,
    maxNewTokens: num('tokens'),
    decoder: value('decoder') as LabDecoder,
    tree: value('tree') as LabTree,
    acceptance: value('acceptance') as AcceptanceName,
    k: k === '' ? undefined : Number(k),
    temperature: num('temperature'),
    topK: 0,
    topP: 1,
    seed: num('seed'),
    compare: $<HTMLInputElement>('compare').checked,
  };
}

function showVerdict(r: DecodeResult): void {
  const v = $('verdict');
  const speed = r.ar && r.ar.tokensPerSec > 0 ? ` Speedup ×${(r.draft.tokensPerSec / r.ar.tokensPerSec).toFixed(2)}, τ ${r.draft.tau.toFixed(2)}.` : '';
  if (r.identical === null) {
    v.className = 'verdict info';
    v.textContent = `Done: ${r.draft.generated} tokens, τ ${r.draft.tau.toFixed(2)}.`;
  } else if (r.mustMatch) {
    v.className = `verdict ${r.identical ? 'same' : 'differ'}`;
    v.textContent = r.identical ? `Identical to greedy AR, token for token (lossless).${speed}` : 'DIFFERENT from greedy AR: a lossless decoder must match it.';
  } else {
    v.className = 'verdict info';
    v.textContent = `${r.identical ? 'Identical' : 'Differs'}: ${r.ar ? (value('acceptance') === 'sampling' ? 'speculative sampling draws from the same distribution as AR sampling, not the same tokens' : 'a lossy rule is not checked against the model') : ''}.${speed}`;
  }
  if (r.stopped) v.textContent += ' (stopped)';
}

async function generate(): Promise<void> {
  if (!model) return;
  const req = request();
  const text = new TokenText(model.tokenizer);
  const method = req.decoder === 'own' ? `${model.ownDecoder} (${req.tree}), ${req.acceptance}` : req.decoder === 'lookup' ? `prompt lookup, ${req.acceptance}` : 'AR';
  lanes.draft.reset(method, req.prompt, text);
  lanes.ar.reset(req.temperature > 0 ? 'AR sampled' : 'AR greedy', req.prompt, new TokenText(model.tokenizer), req.compare);
  $('verdict').className = 'verdict';
  $('verdict').textContent = '';
  $('tree-view').replaceChildren();
  $('tree-title').textContent = 'Draft tree of the current step';
  // Events are drawn once per animation frame, so a burst of fast steps never holds this thread for long.
  let queued: StepEvent[] = [];
  let frame = 0;
  const flush = () => {
    frame = 0;
    const events = queued;
    queued = [];
    let lastTree: StepEvent | null = null;
    for (const e of events) {
      lanes[e.lane].addStep(e.committed, e.stats);
      if (e.lane === 'draft' && (e.tree.tokens.length > 1 || lastTree === null)) lastTree = e;
    }
    // The last step that drafted: the final steps of a run may have no room left for drafts.
    if (lastTree && (lastTree.tree.tokens.length > 1 || $('tree-view').childElementCount === 0)) {
      drawTree($('tree-view'), lastTree, text);
      $('tree-title').textContent = `Draft tree of step ${lastTree.step + 1}: ${lastTree.tree.tokens.length - 1} draft node(s), ${lastTree.path.length - 1} accepted, then the bonus token`;
    }
  };
  const r = await run('decoding', () =>
    client.decode(req, (e) => {
      queued.push(e);
      frame ||= requestAnimationFrame(flush);
    }),
  );
  if (frame) cancelAnimationFrame(frame);
  flush();
  if (r) {
    showVerdict(r);
    (window as unknown as { mtpLab: { lastResult: DecodeResult } }).mtpLab.lastResult = r;
  }
}

async function train(): Promise<void> {
  const corpus = value('train-corpus');
  const steps = num('train-steps');
  const kind = value('train-kind') as MtpKind;
  const progress = $<HTMLProgressElement>('train-progress');
  progress.value = 0;
  lossPlot.reset(`nano ${kind}`);
  const m = await run('training', async () => {
    setStatus('train-status', `fetching the ${corpus} corpus…`);
    const res = await fetch(new URL(`corpus/${corpus}.txt`, document.baseURI));
    if (!res.ok) throw new Error(`could not load corpus/${corpus}.txt: HTTP ${res.status}`);
    const text = await res.text();
    const n = workers.value;
    const backend = document.body.dataset.backend;
    setStatus('train-status', `training on ${backend} with ${n} worker${n === 1 ? '' : 's'}…`);
    const ms: number[] = [];
    const req = { corpus, text, kind, k: kind === 'none' ? 1 : num('train-k'), steps, lr: num('train-lr'), batchSize: TRAIN_BATCH, seed: 1, workers: n };
    const r = await client.train(req, (e) => {
      progress.value = e.step / e.steps;
      lossPlot.add(e.step, e.loss);
      ms.push(e.ms);
      const step = median(ms); // robust to the first steps, which also warm the backend up
      const speed = `${step.toFixed(0)} ms/step, ${((e.tokens * 1000) / step).toFixed(0)} tokens/s, ${e.workers} worker${e.workers === 1 ? '' : 's'} on ${backend}`;
      setStatus('train-status', `step ${e.step}/${e.steps}, loss ${e.loss.toFixed(3)} (${speed})`);
    });
    return r.model;
  });
  lossPlot.draw();
  if (m) {
    showModel(m);
    const select = $<HTMLSelectElement>('model');
    let opt = select.querySelector<HTMLOptionElement>(`option[value="${NANO}"]`);
    if (!opt) {
      opt = new Option('', NANO);
      select.append(opt);
    }
    opt.textContent = m.label;
    select.value = NANO;
    setStatus('train-status', `${$('train-status').textContent}; done: the nano model is loaded above`);
  }
}

async function start(): Promise<void> {
  setBusy(true);
  const select = $<HTMLSelectElement>('model');
  let names: string[] = [];
  try {
    const res = await fetch(new URL('zoo/manifest.json', document.baseURI));
    if (res.ok) names = Object.keys(((await res.json()) as { models: Record<string, unknown> }).models).sort();
  } catch {
    names = [];
  }
  for (const n of names) select.append(new Option(`zoo: ${n}`, n));
  if (names.length === 0) message('This build ships no zoo models: train a nano model below, or open a checkpoint file.');
  const wanted = new URLSearchParams(location.search).get('backend') as LabBackend | null;
  const hasGpu = await (async () => {
    const gpu = (navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
    try {
      return gpu !== undefined && (await gpu.requestAdapter()) !== null;
    } catch {
      return false;
    }
  })();
  const order: LabBackend[] = wanted && LAB_BACKENDS.includes(wanted) ? [wanted] : hasGpu ? ['webgpu', 'webgl', 'wasm'] : ['webgl', 'wasm'];
  if (!hasGpu && !wanted) message('WebGPU is not available in this browser (no adapter); using WebGL. In Chromium, WebGPU may need --enable-unsafe-webgpu.');
  let ok = false;
  for (const b of order) if ((ok = await chooseBackend(b))) break;
  if (!ok && !wanted) ok = await chooseBackend('cpu');
  setBusy(false);
  const preferred = ['code-medusa1-k5', 'prose-medusa1-k5'].find((n) => names.includes(n)) ?? names[0];
  const wantedModel = new URLSearchParams(location.search).get('model');
  const first = wantedModel === 'none' ? undefined : wantedModel && names.includes(wantedModel) ? wantedModel : preferred;
  if (ok && first) {
    select.value = first;
    await loadZoo(first);
  }
  document.body.dataset.ready = 'true';
}

$('backend').addEventListener('change', () => void run('backend', () => chooseBackend(value('backend') as LabBackend)));
$('model').addEventListener('change', () => {
  const name = value('model');
  if (name !== NANO) void loadZoo(name);
});
$('ckpt').addEventListener('change', async () => {
  const file = $<HTMLInputElement>('ckpt').files?.[0];
  if (!file) return;
  setStatus('model-status', `reading ${file.name}…`);
  const m = await run(`loading ${file.name}`, async () => client.loadCheckpoint(file.name, await file.arrayBuffer()));
  if (m) showModel(m);
  else setStatus('model-status', `could not load ${file.name}`, true);
});
$('acceptance').addEventListener('change', () => {
  // greedy is temperature 0 by definition; sampling rules need a temperature above it to differ from greedy
  const t = $<HTMLInputElement>('temperature');
  if (value('acceptance') === 'greedy') t.value = '0';
  else if (Number(t.value) === 0 && value('acceptance') !== 'unverified') t.value = '1';
});
$('prompt').addEventListener('input', () => ($<HTMLTextAreaElement>('prompt').dataset.edited = 'true'));
$('generate').addEventListener('click', () => void generate());
$('stop').addEventListener('click', () => void client.stop());
$('train-start').addEventListener('click', () => void train());
$('train-stop').addEventListener('click', () => void client.stop());

/** For the browser tests and the console: the worker client and the last decoding result. */
(window as unknown as { mtpLab: unknown }).mtpLab = { client, lastResult: null, ready: start() };
