/**
 * Choosing and initializing the TF.js backend, in Node and in the browser.
 *
 * Backends (docs/backends.md has the measurements behind these choices):
 *  - `cpu`: pure JS reference; correct, very slow.
 *  - `wasm`: tfjs-backend-wasm with SIMD (1 thread in Node), plus the fixes and fused kernels in wasm_fixes.ts (the
 *    fused kernels are bound to the backend here, once it is ready; `nativeKernelsLoaded()` tells; their plain or
 *    relaxed-SIMD build is chosen here too, wasm_simd.ts). The CPU workhorse.
 *  - `webgpu`: in the browser through navigator.gpu; in Node through Dawn (node_webgpu.ts). Under Node, read tensors with
 *    `await t.data()`: `dataSync()` throws there for results computed on the GPU.
 *  - `webgl`: browser only (headless-gl in Node returns wrong data for slice/split with an offset).
 *  - `tensorflow`: @tensorflow/tfjs-node (libtensorflow), optional, Node only; used when installed.
 *  - `auto`: Node: tensorflow if @tensorflow/tfjs-node resolves, else webgpu on a hardware GPU adapter, else wasm.
 *    Browser: webgpu if navigator.gpu gives an adapter, else webgl, else wasm.
 *
 * Importable in a browser bundle: Node-only modules are loaded lazily, and only under Node.
 */
import * as tf from '@tensorflow/tfjs';
import { canResolve, currentPlatform, nodeRequire, type Platform } from './platform';
import { registerWasmFixes } from './wasm_fixes';
import { loadNativeKernels, wasmSimdVariant } from './wasm_native';
import { chooseWasmSimd, relaxedSimdSupported, wasmSimdModeFromEnv, type WasmSimdMode } from './wasm_simd';

export const BACKEND_NAMES = ['auto', 'cpu', 'wasm', 'webgl', 'webgpu', 'tensorflow'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** What initBackend chose. */
export interface BackendInfo {
  /** The tfjs backend name now active (tf.getBackend()). */
  name: string;
  platform: Platform;
  /**
   * What runs underneath, e.g. 'wasm SIMD, 1 thread, kernels: relaxed SIMD', a WebGPU adapter's description, or
   * 'pure JS'.
   */
  detail: string;
}

export interface InitBackendOptions {
  /**
   * wasm only: where the tfjs-backend-wasm `.wasm` binaries are served from, passed to `setWasmPaths` before the
   * backend first initializes. Needed in a browser unless the bundler serves them beside the script: a directory URL
   * ending in '/', e.g. 'https://cdn.jsdelivr.net/npm/@tensorflow/tfjs-backend-wasm@4.22.0/dist/'. Not needed in Node.
   */
  wasmPath?: string;
  /**
   * wasm only: which build of this package's kernels to bind (src/backend/wasm_simd.ts): 'relaxed' (fused
   * multiply-adds; throws where the engine lacks relaxed SIMD, saying how to enable it), 'plain', or 'auto' (relaxed
   * when the engine accepts it, else plain). Default: the build already bound to the backend, else the environment
   * variable MTP_WASM_SIMD (Node), else 'auto'. Given for a wasm backend that is already initialized, it rebinds.
   */
  wasmSimd?: WasmSimdMode;
  /**
   * wasm in a browser only: allow tfjs-backend-wasm's multi-threaded build, which it picks whenever SharedArrayBuffer
   * is available (a cross-origin-isolated page). Default false: one thread, so that this package's SIMD kernels run
   * (they need the single-threaded build's unshared memory, and give more than threads do on a few cores); a page
   * trains on several cores with data-parallel ranks instead (src/train/data_parallel_web.ts). Node has no threaded
   * build. Read before the backend first initializes.
   */
  wasmThreads?: boolean;
}

const TFJS_NODE = '@tensorflow/tfjs-node';

/** Info per initialized tfjs backend name, so that initializing it again is a lookup. */
const initialized = new Map<string, BackendInfo>();
/** What 'auto' resolved to once, so that later 'auto' calls do not probe again. */
let autoChoice: string | undefined;
/** Serializes initBackend calls: tfjs has one active backend. */
let queue: Promise<unknown> = Promise.resolve();

/**
 * Sets tf's backend and waits until it is ready. Idempotent: when `name` resolves to the backend already active and
 * initialized here, returns at once. Throws for unknown names, and with the reason (and what to install or use
 * instead) when a backend cannot run here.
 */
export function initBackend(name: BackendName = 'auto', options: InitBackendOptions = {}): Promise<BackendInfo> {
  const run = queue.then(() => initSerial(name, options));
  queue = run.catch(() => undefined);
  return run;
}

/** The active backend. Throws if tfjs has no backend yet. */
export function backendInfo(): BackendInfo {
  const name = tf.getBackend();
  if (!name) throw new Error('No TF.js backend is active yet: call initBackend() first.');
  return initialized.get(name) ?? { name, platform: currentPlatform(), detail: 'set outside initBackend' };
}

async function initSerial(name: BackendName, options: InitBackendOptions): Promise<BackendInfo> {
  if (!(BACKEND_NAMES as readonly string[]).includes(name)) {
    throw new Error(`Unknown backend '${String(name)}'. Allowed: ${BACKEND_NAMES.join(', ')}.`);
  }
  if (name !== 'auto') return activate(name, options);
  if (autoChoice !== undefined) return activate(autoChoice, options);

  const failures: string[] = [];
  for (const candidate of await autoCandidates()) {
    try {
      const info = await activate(candidate, options);
      autoChoice = candidate;
      return info;
    } catch (e) {
      failures.push(`${candidate}: ${(e as Error).message}`);
    }
  }
  throw new Error(`No TF.js backend could be initialized:\n${failures.join('\n')}`);
}

/** The backends 'auto' tries, best first. */
async function autoCandidates(): Promise<string[]> {
  if (currentPlatform() === 'node') {
    if (canResolve(TFJS_NODE)) return ['tensorflow', 'wasm'];
    const { probeHardwareAdapter } = await import('./node_webgpu');
    return (await probeHardwareAdapter()) !== null ? ['webgpu', 'wasm'] : ['wasm'];
  }
  const candidates = (await browserGpuAdapter()) !== null ? ['webgpu'] : [];
  return [...candidates, 'webgl', 'wasm'];
}

/** Prepares, sets and readies one backend; a lookup when it is already the active one. */
async function activate(name: string, options: InitBackendOptions): Promise<BackendInfo> {
  const known = initialized.get(name);
  if (known !== undefined && tf.getBackend() === name) {
    if (name !== 'wasm' || options.wasmSimd === undefined) return known;
    await loadNativeKernels(options.wasmSimd);
    const info: BackendInfo = { ...known, detail: `${known.detail.replace(/, kernels: .*$/, '')}${describeWasmKernels()}` };
    initialized.set(name, info);
    return info;
  }

  const platform = currentPlatform();
  const describe = await prepare(name, platform, options);
  const previous = tf.getBackend();
  if (!(await tf.setBackend(name))) {
    if (previous && previous !== name) await tf.setBackend(previous);
    throw new Error(`TF.js could not initialize the '${name}' backend (tfjs logged the cause above).`);
  }
  await tf.ready();
  if (name === 'cpu' && platform === 'node') silenceTfjsNodeHint();
  if (name === 'wasm') await loadNativeKernels(options.wasmSimd);
  const info: BackendInfo = { name, platform, detail: await describe() };
  initialized.set(name, info);
  return info;
}

/**
 * Loads and registers what backend `name` needs, or throws why it cannot run here. Returns how to describe it once
 * it is initialized.
 */
async function prepare(name: string, platform: Platform, options: InitBackendOptions): Promise<() => Promise<string>> {
  switch (name) {
    case 'cpu':
      return async () => 'pure JS';
    case 'wasm': {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      if (options.wasmPath !== undefined) wasm.setWasmPaths(options.wasmPath);
      // an unknown mode, or 'relaxed' where the engine lacks it, fails here, before the active backend changes
      chooseWasmSimd(options.wasmSimd ?? wasmSimdModeFromEnv() ?? 'auto', relaxedSimdSupported());
      if (platform === 'browser' && options.wasmThreads !== true) tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
      registerWasmFixes();
      return async () => {
        const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) ? 'SIMD' : 'no SIMD';
        const threads = wasm.getThreadsCount();
        return `wasm ${simd}, ${threads} thread${threads === 1 ? '' : 's'}${describeWasmKernels()}`;
      };
    }
    case 'webgl':
      if (platform === 'node') {
        throw new Error(
          "The 'webgl' backend needs a browser: in Node, headless-gl (npm gl) silently returns wrong data for " +
            "slice/split with an offset. In Node use 'wasm' or 'webgpu'; for WebGL, run in Chromium.",
        );
      }
      return async () => {
        const version = tf.env().getNumber('WEBGL_VERSION');
        // floatPrecision() answers 16 whenever float32 rendering is enabled (tfjs 4.22), so ask the flag itself
        const float32 = tf.env().getBool('WEBGL_RENDER_FLOAT32_ENABLED') || tf.backend().floatPrecision() === 32;
        return `WebGL ${version}, float${float32 ? 32 : 16} textures`;
      };
    case 'webgpu': {
      if (platform === 'node') {
        const { installNodeWebGPU } = await import('./node_webgpu');
        const { detail } = await installNodeWebGPU();
        return async () => detail;
      }
      const adapter = await browserGpuAdapter();
      if (adapter === null) {
        throw new Error(
          'WebGPU is not available in this browser (navigator.gpu gave no adapter; headless Chromium needs ' +
            "--enable-unsafe-webgpu). Use 'webgl' or 'wasm'.",
        );
      }
      await import('@tensorflow/tfjs-backend-webgpu');
      return async () => describeGpuAdapter(adapter);
    }
    case 'tensorflow':
      if (platform !== 'node') throw new Error("The 'tensorflow' backend (@tensorflow/tfjs-node) runs only in Node.");
      if (!canResolve(TFJS_NODE)) {
        throw new Error(
          `The 'tensorflow' backend needs the package ${TFJS_NODE}, which is not installed: ` +
            `npm i ${TFJS_NODE}@4.22.0 (its install script downloads libtensorflow, so it needs network access then).`,
        );
      }
      nodeRequire()(TFJS_NODE);
      return async () => `libtensorflow through ${TFJS_NODE}`;
    default:
      throw new Error(`Unknown backend '${name}'. Allowed: ${BACKEND_NAMES.join(', ')}.`);
  }
}

/** ', kernels: relaxed SIMD' or ', kernels: plain SIMD' for the build bound to the active wasm backend; '' when none is. */
function describeWasmKernels(): string {
  const variant = wasmSimdVariant();
  return variant === null ? '' : `, kernels: ${variant} SIMD`;
}

/**
 * The cpu backend prints "Hi, looks like you are running TensorFlow.js in Node.js ... install our node backend" on
 * its first tensor under Node. No tfjs flag turns off just that hint (PROD and IS_TEST silence every tfjs warning,
 * and IS_TEST also enables kernel leak checks), so this marks the backend's first write as done instead.
 */
function silenceTfjsNodeHint(): void {
  const cpu = tf.findBackend('cpu') as { firstUse?: unknown } | null;
  if (cpu !== null && typeof cpu.firstUse === 'boolean') cpu.firstUse = false;
}

interface BrowserGpuAdapter {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string };
}

/** The browser's WebGPU adapter, or null when navigator.gpu is missing or gives none. */
async function browserGpuAdapter(): Promise<BrowserGpuAdapter | null> {
  const gpu = (globalThis as { navigator?: { gpu?: { requestAdapter(): Promise<BrowserGpuAdapter | null> } } })
    .navigator?.gpu;
  if (gpu === undefined) return null;
  try {
    return await gpu.requestAdapter();
  } catch {
    return null;
  }
}

function describeGpuAdapter(adapter: BrowserGpuAdapter): string {
  const info = adapter.info ?? {};
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((s): s is string => !!s);
  return `WebGPU: ${parts.join(' ') || 'adapter without info'}`;
}
