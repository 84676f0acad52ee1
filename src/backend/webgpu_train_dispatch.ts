/**
 * How this package's training programs run on tfjs-backend-webgpu: WGSL compute programs dispatched into the backend's
 * own compute pass and command encoder, reading and writing tfjs tensors' GPU buffers directly, so they order with
 * tfjs's programs and share its submissions, buffer pool and deferred disposal.
 *
 * Why not tfjs's `runWebGPUProgram`: it allows one output per program, and the fused training kernels need several
 * (LayerNorm's gradient gives dx, dγ and dβ; the optimiser writes parameters and both moments). A dispatch here costs
 * the host what one of tfjs's does (a bind group, a uniform buffer from the backend's pool, a dispatch), and the point
 * of the fused kernels is to issue far fewer of them: a tfjs training step is hundreds of programs
 * (docs/performance.md, "Why TF.js is slow").
 *
 * Limits: programs stay within WebGPU's compatibility-mode defaults (128 threads and 16 KB of workgroup memory per
 * workgroup), and use at most 8 storage buffers, the core-mode default (Dawn's software adapter reports 8 too);
 * `webgpuTrainBackend()` is null on a device with fewer, and the model then runs the plain tfjs ops. Workgroup barriers
 * sit only in a program's top-level flow (OpenGL ES compute, Dawn's software path, allows them nowhere else), so
 * reductions are unrolled.
 *
 * Uses tfjs-backend-webgpu 4.22 internals (command encoder, compute pass, tensor map, uniform pool), typed locally.
 */
import * as tf from '@tensorflow/tfjs';

/** tfjs flag: false runs training on webgpu as plain tfjs ops (for comparisons within one process). */
export const WEBGPU_TRAIN_FLAG = 'MTP_WEBGPU_TRAIN';
tf.env().registerFlag(WEBGPU_TRAIN_FLAG, () => true);

/** Threads per workgroup (WebGPU's compatibility-mode limit). */
export const WG = 128;
/** Storage buffers the largest program binds. */
const STORAGE_BUFFERS = 8;

// ---- the parts of WebGPU and of the tfjs webgpu backend used here ----

export interface GBuffer {
  size: number;
  destroy(): void;
}
interface GPipeline {
  getBindGroupLayout(i: number): object;
}
interface GPass {
  setPipeline(p: GPipeline): void;
  setBindGroup(i: number, g: object): void;
  dispatchWorkgroups(x: number, y?: number, z?: number): void;
  end(): void;
}
export interface GEncoder {
  beginComputePass(d?: object): GPass;
  copyBufferToBuffer(src: GBuffer, srcOffset: number, dst: GBuffer, dstOffset: number, size: number): void;
  clearBuffer(b: GBuffer, offset?: number, size?: number): void;
}
interface GDevice {
  limits: { maxStorageBuffersPerShaderStage: number; maxComputeInvocationsPerWorkgroup: number; maxComputeWorkgroupStorageSize: number; maxStorageBufferBindingSize: number };
  createBuffer(d: { size: number; usage: number }): GBuffer;
  createShaderModule(d: { code: string }): object;
  createComputePipeline(d: { layout: 'auto'; compute: { module: object; entryPoint: string } }): GPipeline;
  createBindGroup(d: { layout: object; entries: { binding: number; resource: object }[] }): object;
  pushErrorScope(filter: 'validation'): void;
  popErrorScope(): Promise<{ message: string } | null>;
}
interface TensorData {
  values: ArrayLike<number> | null;
  resource?: unknown;
}
/** A uniform value as tfjs's `makeUniforms` lays it out (std140-like alignment by length). */
export interface Uniform {
  type: 'float32' | 'int32' | 'uint32';
  data: number[];
}
export interface WebGpuTrainBackend {
  device: GDevice;
  commandEncoder: GEncoder | null;
  computePassEncoder: GPass | null;
  dispatchCountInPass: number;
  commandQueueOwnedIds: WeakSet<object>;
  tensorMap: { get(dataId: object): TensorData };
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  uploadToGPU(dataId: object): void;
  makeTensorInfo(shape: number[], dtype: 'float32' | 'int32'): tf.TensorInfo;
  makeUniforms(u: Uniform[]): object;
  disposeData(dataId: object): boolean;
}

// GPUBufferUsage bits (fixed by the WebGPU specification).
export const USAGE = { COPY_SRC: 0x4, COPY_DST: 0x8, STORAGE: 0x80 };

/** Whether a device can run the training programs. */
function supports(device: GDevice): boolean {
  const l = device.limits;
  return l.maxStorageBuffersPerShaderStage >= STORAGE_BUFFERS && l.maxComputeInvocationsPerWorkgroup >= WG && l.maxComputeWorkgroupStorageSize >= 16384;
}

/** The webgpu backend when the fused training programs apply (webgpu active, flag on, device able); else null. */
export function webgpuTrainBackend(): WebGpuTrainBackend | null {
  if (tf.getBackend() !== 'webgpu' || !tf.env().getBool(WEBGPU_TRAIN_FLAG)) return null;
  const b = tf.backend() as unknown as WebGpuTrainBackend;
  return supports(b.device) ? b : null;
}

/** Dispatches issued by the training programs since the process started. */
export const trainDispatches = { count: 0 };

const pipelines = new WeakMap<object, Map<string, GPipeline>>();

function pipelineFor(device: GDevice, code: string): GPipeline {
  let byCode = pipelines.get(device);
  if (!byCode) pipelines.set(device, (byCode = new Map()));
  let p = byCode.get(code);
  if (!p) {
    device.pushErrorScope('validation');
    p = device.createComputePipeline({ layout: 'auto', compute: { module: device.createShaderModule({ code }), entryPoint: 'main' } });
    // a program that fails to compile would leave its outputs unwritten: say so loudly
    void device.popErrorScope().then((e) => e && console.error(`webgpu training program failed to compile: ${e.message}\n${code}`));
    byCode.set(code, p);
  }
  return p;
}

/** The GPU buffer of a tensor (uploaded first when its values are still on the CPU). */
export function gpuBuffer(b: WebGpuTrainBackend, t: tf.TensorInfo): GBuffer {
  b.uploadToGPU(t.dataId);
  return b.tensorMap.get(t.dataId).resource as GBuffer;
}

/** A new float32 (or int32) tensor of `shape` whose GPU buffer the programs write. */
export function newOutput(b: WebGpuTrainBackend, shape: number[], dtype: 'float32' | 'int32' = 'float32'): tf.TensorInfo {
  const info = b.makeTensorInfo(shape, dtype);
  b.uploadToGPU(info.dataId);
  return info;
}

/** The backend's command encoder with no compute pass open (for copies); tensors read or written are held until the submission. */
export function encoderForCopies(b: WebGpuTrainBackend, hold: tf.TensorInfo[]): GEncoder {
  for (const t of hold) b.commandQueueOwnedIds.add(t.dataId);
  b.ensureCommandEncoderReady();
  b.endComputePassEncoder();
  return b.commandEncoder!;
}

/**
 * One dispatch of `code` over `grid` workgroups: bindings 0..n-1 are `tensors` (or raw buffers), in the order the
 * program declares them, and binding n is the uniform record when `uniforms` is given.
 */
export function dispatch(b: WebGpuTrainBackend, code: string, bindings: (tf.TensorInfo | GBuffer)[], uniforms: Uniform[] | null, grid: [number, number?, number?]): void {
  const pipeline = pipelineFor(b.device, code);
  const entries = bindings.map((x, binding) => {
    const isTensor = 'dataId' in x;
    if (isTensor) b.commandQueueOwnedIds.add(x.dataId);
    return { binding, resource: { buffer: isTensor ? gpuBuffer(b, x) : x } };
  });
  if (uniforms) entries.push({ binding: bindings.length, resource: b.makeUniforms(uniforms) as { buffer: GBuffer } });
  const group = b.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
  b.ensureCommandEncoderReady();
  if (!b.computePassEncoder) b.computePassEncoder = b.commandEncoder!.beginComputePass({});
  const pass = b.computePassEncoder;
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, group);
  pass.dispatchWorkgroups(grid[0], grid[1] ?? 1, grid[2] ?? 1);
  trainDispatches.count += 1;
  b.dispatchCountInPass += 1;
  // submit as tfjs does after a batch of dispatches, so long chains of programs start on the GPU early
  if (b.dispatchCountInPass >= (tf.env().get('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE') as number)) {
    b.endComputePassEncoder();
    b.submitQueue();
  }
}

/** A tensor from a tensor info made by `newOutput` (for returning from ops that are not kernels). */
export function toTensor(info: tf.TensorInfo): tf.Tensor {
  return tf.engine().makeTensorFromTensorInfo(info, tf.backend());
}

// ---- WGSL pieces ----

/** A float literal for WGSL. */
export const f32 = (x: number): string => (Number.isInteger(x) ? `${x}.0` : `${x}`);

/**
 * The workgroup sum of each thread's `part` into `total`, in a fixed order, through workgroup array `r` (declared
 * `array<f32, WG>`; one array per reduction: reusing one for two successive reductions gave wrong sums on llvmpipe).
 * Unrolled, with every barrier in main's top-level flow.
 */
export function wgSum(part: string, total: string, r: string): string {
  const steps: string[] = [];
  for (let n = WG / 2; n >= 1; n /= 2) steps.push(`if (tid < ${n}u) { ${r}[tid] = ${r}[tid] + ${r}[tid + ${n}u]; }\n  workgroupBarrier();`);
  return `${r}[tid] = ${part};\n  workgroupBarrier();\n  ${steps.join('\n  ')}\n  let ${total} = ${r}[0];\n  workgroupBarrier();`;
}
