/**
 * The `webgpu` tfjs backend under Node, through Dawn (the npm `webgpu` package, which ships a prebuilt `dawn.node`).
 *
 * What it takes (docs/backends.md, WebGPU in Node; docs/performance.md, running the GPU benchmarks):
 *  - `navigator.gpu` must exist, and Dawn's `globals` (GPUBufferUsage, ...) must be on globalThis, before
 *    '@tensorflow/tfjs-backend-webgpu' is imported: it registers the backend only if `navigator.gpu` exists then.
 *  - Dawn on Vulkan (`backend=vulkan`) is the hardware path (NVIDIA H100: works). On a CPU-only Linux machine Vulkan
 *    gives no adapter (Mesa 22.3 lavapipe lacks a required feature); Dawn's OpenGL ES path (`backend=opengles`,
 *    `EGL_PLATFORM=surfaceless`, adapter `featureLevel: 'compatibility'`, Debian libegl-mesa0 + libegl-dev) works
 *    there, on Mesa llvmpipe: software rendering, slower than the wasm backend (512³ matMul 105 ms vs 9.5 ms).
 *  - tfjs 4.22 requests the feature 'bgra8unorm-storage' wrapped in an array, which Dawn rejects: the requested
 *    features are filtered to those the adapter lists before `requestDevice`.
 *  - Reading tensors: `dataSync()` throws under Node webgpu for results computed on the GPU ("OffscreenCanvas is not
 *    defined"; tiny element-wise results forwarded to the CPU happen to work), so callers must read with
 *    `await t.data()` (or `await t.array()`).
 * Node-only: nothing here runs at import time, and Node modules are loaded through `nodeRequire` with variable
 * specifiers, so that browser bundles that include this file stay valid.
 */
import * as tf from '@tensorflow/tfjs';
import { nodeRequire } from './platform';

/** The parts of the WebGPU API used here (kept local so as not to depend on a version of the WebGPU typings). */
interface GpuAdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
}
interface GpuAdapterLike {
  features: { has(name: string): boolean };
  info?: GpuAdapterInfoLike;
  requestDevice(descriptor?: { requiredFeatures?: unknown[] } & Record<string, unknown>): Promise<unknown>;
}
interface GpuLike {
  requestAdapter(options?: Record<string, unknown>): Promise<GpuAdapterLike | null>;
}
interface DawnModule {
  create(options: string[]): GpuLike;
  globals: Record<string, unknown>;
}

/** One way of reaching a GPU through Dawn. */
interface DawnRoute {
  /** Dawn instance options, e.g. ['backend=vulkan']. */
  options: string[];
  /** `featureLevel` passed to requestAdapter. */
  featureLevel: 'core' | 'compatibility';
  /** Environment variables this route needs (set only when unset). */
  env: Record<string, string>;
}

/** An adapter found through Dawn, with what is needed to hand it to tfjs. */
export interface DawnAdapter {
  gpu: GpuLike;
  route: DawnRoute;
  adapter: GpuAdapterLike;
  /** True for CPU renderers (llvmpipe, lavapipe, SwiftShader, ...). */
  software: boolean;
  /** Human-readable description of the adapter, for BackendInfo.detail. */
  detail: string;
}

const VULKAN: DawnRoute = { options: ['backend=vulkan'], featureLevel: 'core', env: {} };
const OPENGLES: DawnRoute = {
  options: ['backend=opengles'],
  featureLevel: 'compatibility',
  env: { EGL_PLATFORM: 'surfaceless' },
};
/** Dawn's default backend (Metal on macOS, D3D12 on Windows). */
const PLATFORM_DEFAULT: DawnRoute = { options: [], featureLevel: 'core', env: {} };

const SOFTWARE_RENDERER = /llvmpipe|lavapipe|softpipe|swiftshader|software|cpu/i;

let dawnModule: DawnModule | undefined;
let hardwareProbe: Promise<DawnAdapter | null> | undefined;
let installed: DawnAdapter | undefined;

function loadDawn(): DawnModule {
  if (dawnModule === undefined) {
    const specifier = 'webgpu';
    try {
      dawnModule = nodeRequire()(specifier) as DawnModule;
    } catch (e) {
      throw new Error(`WebGPU in Node needs the npm package 'webgpu' (Dawn): ${(e as Error).message}`);
    }
  }
  return dawnModule;
}

function setEnvDefaults(env: Record<string, string>): void {
  for (const [key, value] of Object.entries(env)) if (process.env[key] === undefined) process.env[key] = value;
}

function describeAdapter(adapter: GpuAdapterLike, route: DawnRoute): { software: boolean; detail: string } {
  const info = adapter.info ?? {};
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((s): s is string => !!s);
  const name = parts.join(' ') || 'unknown adapter';
  const software = SOFTWARE_RENDERER.test(name);
  const via = route.options.length > 0 ? route.options.join(',') : 'default backend';
  const slow = software ? ' (software rendering on the CPU: slower than the wasm backend)' : '';
  return { software, detail: `Dawn ${via}: ${name}${slow}` };
}

async function tryRoute(route: DawnRoute): Promise<DawnAdapter | null> {
  setEnvDefaults({ XDG_RUNTIME_DIR: '/tmp', ...route.env });
  const gpu = loadDawn().create(route.options);
  const adapter = await gpu.requestAdapter({ featureLevel: route.featureLevel });
  if (adapter === null || adapter === undefined) return null;
  return { gpu, route, adapter, ...describeAdapter(adapter, route) };
}

/**
 * Whether some Vulkan driver manifest (ICD) is installed, in the directories the Vulkan loader searches. Without one,
 * loading Dawn's Vulkan backend cannot find a GPU; checking first avoids loading the 21 MB dawn.node (and its
 * "Couldn't load Vulkan" warning on stderr) on CPU-only machines. Software ICDs (lavapipe, SwiftShader) are ignored.
 */
function hasVulkanDriver(): boolean {
  const fs = nodeRequire()('fs') as typeof import('fs');
  const env = process.env;
  const explicit = [env.VK_DRIVER_FILES, env.VK_ICD_FILENAMES, env.VK_ADD_DRIVER_FILES]
    .filter((v): v is string => !!v)
    .flatMap((v) => v.split(':'));
  if (explicit.some((file) => fs.existsSync(file))) return true;
  const home = env.HOME ?? '';
  const dataDirs = (env.XDG_DATA_DIRS || '/usr/local/share:/usr/share').split(':');
  const configDirs = (env.XDG_CONFIG_DIRS || '/etc/xdg').split(':');
  const roots = [
    env.XDG_CONFIG_HOME || `${home}/.config`,
    ...configDirs,
    '/etc',
    env.XDG_DATA_HOME || `${home}/.local/share`,
    ...dataDirs,
  ];
  return roots.some((root) => {
    const dir = `${root}/vulkan/icd.d`;
    try {
      return fs.readdirSync(dir).some((f) => f.endsWith('.json') && !SOFTWARE_RENDERER.test(f) && !/lvp/.test(f));
    } catch {
      return false;
    }
  });
}

/**
 * A hardware GPU adapter through Dawn, or null; cached, and fast when there is none. On Linux only Vulkan is tried
 * (OpenGL ES here means a software renderer); elsewhere Dawn's default backend. Software adapters count as none.
 */
export function probeHardwareAdapter(): Promise<DawnAdapter | null> {
  if (hardwareProbe === undefined) {
    hardwareProbe = (async () => {
      const linux = process.platform === 'linux';
      if (linux && !hasVulkanDriver()) return null;
      const found = await tryRoute(linux ? VULKAN : PLATFORM_DEFAULT);
      return found !== null && !found.software ? found : null;
    })();
  }
  return hardwareProbe;
}

/** The first adapter Dawn gives: hardware first, then (Linux) the OpenGL ES software path. Throws if none. */
async function findAdapter(): Promise<DawnAdapter> {
  const hardware = await probeHardwareAdapter();
  if (hardware !== null) return hardware;
  const linux = process.platform === 'linux';
  const fallback = await tryRoute(linux ? OPENGLES : PLATFORM_DEFAULT);
  if (fallback !== null) return fallback;
  throw new Error(
    linux
      ? 'No WebGPU adapter through Dawn: Vulkan found no GPU (needs a GPU driver with its Vulkan ICD, e.g. the NVIDIA ' +
          "driver, whose ICD also needs libglvnd0 and libglx0, and the Vulkan loader, Debian package libvulkan1), and " +
          'the OpenGL ES software fallback found none (needs Mesa EGL: Debian packages libegl-mesa0 libegl-dev). ' +
          'Use the wasm backend instead.'
      : 'No WebGPU adapter through Dawn on this machine. Use the wasm backend instead.',
  );
}

/** Copies Dawn's WebGPU globals onto globalThis and installs `navigator.gpu`, pinned to the chosen route. */
function installGlobals(found: DawnAdapter, globals: Record<string, unknown>): void {
  const g = globalThis as Record<string, unknown>;
  for (const [key, value] of Object.entries(globals)) if (g[key] === undefined) g[key] = value;

  const { gpu, route } = found;
  const navigatorGpu = {
    requestAdapter: async (options?: Record<string, unknown>) => {
      const adapter = await gpu.requestAdapter({ ...options, featureLevel: route.featureLevel });
      return adapter === null ? null : withFeatureFilter(adapter);
    },
    getPreferredCanvasFormat: () => 'rgba8unorm',
  };
  const nav = g.navigator as Record<string, unknown> | undefined;
  if (nav === undefined) {
    g.navigator = { gpu: navigatorGpu };
  } else {
    Object.defineProperty(nav, 'gpu', { value: navigatorGpu, configurable: true, writable: true });
  }
}

/** Makes `adapter.requestDevice` drop requested features the adapter does not list (tfjs 4.22 asks one malformed). */
function withFeatureFilter(adapter: GpuAdapterLike): GpuAdapterLike {
  const requestDevice = adapter.requestDevice.bind(adapter);
  adapter.requestDevice = (descriptor) => {
    const requiredFeatures = (descriptor?.requiredFeatures ?? []).filter(
      (f): f is string => typeof f === 'string' && adapter.features.has(f),
    );
    return requestDevice({ ...descriptor, requiredFeatures });
  };
  return adapter;
}

/**
 * Makes the tfjs `webgpu` backend available under Node: finds an adapter (hardware, else the slow software path),
 * installs `navigator.gpu`, then imports '@tensorflow/tfjs-backend-webgpu' so that it registers. Idempotent.
 * Returns the adapter description. Throws naming what is missing when Dawn finds no adapter.
 *
 * Tensors of this backend must be read with `await t.data()`: `dataSync()` throws under Node.
 */
export async function installNodeWebGPU(): Promise<{ detail: string; software: boolean }> {
  if (installed === undefined) {
    const found = await findAdapter();
    installGlobals(found, loadDawn().globals);
    await import('@tensorflow/tfjs-backend-webgpu');
    if (tf.findBackendFactory('webgpu') === null) {
      throw new Error(
        "'@tensorflow/tfjs-backend-webgpu' was loaded before navigator.gpu existed, so it did not register the " +
          "webgpu backend: call initBackend('webgpu') before anything imports that package.",
      );
    }
    installed = found;
  }
  return { detail: installed.detail, software: installed.software };
}
