/**
 * The GPU runtime: pipelines, pooled buffers, batched dispatches, readback.
 *
 * This is the numeric hot path, so it is plain TypeScript, not Effect. Kernel wrappers call
 * `dispatch`, which records into one compute pass; nothing is submitted until `flush` (or a read).
 * Launching costs ~30 µs per dispatch on llvmpipe but ~100 µs more per submit, so batching matters.
 */
import type { DispatchRecord, Profiler } from "./profile.ts"
import { type DType, type Tensor, numel } from "./tensor.ts"

/** Kernel variants are chosen per adapter: llvmpipe wants the opposite shapes of a real GPU. */
export type AdapterProfile = "cpu" | "gpu"

/** Dawn backends ropeway asks for: "native" is Dawn's platform default (Metal, D3D12, or Vulkan). */
export type Backend = "vulkan" | "opengles" | "native"

export interface AdapterDescription {
  readonly backend: Backend
  readonly vendor: string
  readonly architecture: string
  readonly device: string
  readonly description: string
  /** A software rasterizer (llvmpipe, lavapipe) rather than a GPU. */
  readonly software: boolean
  readonly profile: AdapterProfile
  /** The device was created with `shader-f16` (kernels may use `enable f16;`). */
  readonly f16: boolean
}

export type Binding = Tensor | GPUBuffer | GPUTextureView | { readonly buffer: GPUBuffer; readonly offset?: number; readonly size?: number }

/** Uniform slots are 256 bytes apart (minUniformBufferOffsetAlignment); each holds ≤ 256 bytes of params. */
const UNIFORM_SLOT = 256
const UNIFORM_SLOTS = 512
/** Idle pooled textures past this many bytes are destroyed at the next miss. */
export const TEXTURE_POOL_BYTES = 128 * 1024 * 1024

export interface RuntimeStats {
  /** Bytes in buffers that exist now (in use or pooled). */
  readonly liveBytes: number
  /** The most `liveBytes` has been since the last `resetPeak`. */
  readonly peakBytes: number
  readonly dispatches: number
  readonly submits: number
  /** Pipelines compiled by this runtime (each (label, source) once). */
  readonly pipelines: number
}

export class GpuRuntime {
  private readonly pipelines = new Map<string, GPUComputePipeline>()
  private readonly pool = new Map<string, GPUBuffer[]>()
  private readonly texturePool = new Map<string, GPUTexture[]>()
  private texturePoolBytes = 0
  private readonly sizes = new WeakMap<GPUBuffer | GPUTexture, number>()
  private encoder: GPUCommandEncoder | undefined
  private pass: GPUComputePassEncoder | undefined
  private uniformBuffer: GPUBuffer
  private readonly uniformData = new ArrayBuffer(UNIFORM_SLOT * UNIFORM_SLOTS)
  private uniformUsed = 0
  private error: GPUError | undefined
  private live = 0
  private peak = 0
  private dispatchCount = 0
  private submitCount = 0
  private readonly textureBytes = new WeakMap<GPUTextureView, number>()
  /** While set, every dispatch is recorded (and timed in place where the device has timestamp queries). */
  profiler: Profiler | undefined

  /**
   * `instance` is the object `create()` returned: Dawn frees its instance when that is collected, and any
   * Dawn object still reachable then (a device, even destroyed) crashes at its next use or at its
   * finalizer, so the runtime holds it for as long as the runtime itself is reachable.
   */
  constructor(
    readonly device: GPUDevice,
    readonly adapter: AdapterDescription,
    readonly instance: GPU | undefined = undefined,
  ) {
    this.uniformBuffer = this.createUniformArena()
    device.addEventListener("uncapturederror", (e) => {
      this.error ??= (e as GPUUncapturedErrorEvent).error
    })
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits
  }

  /** Compiles once per (label, source); later calls return the cached pipeline. */
  pipeline(label: string, code: string, entryPoint = "main"): GPUComputePipeline {
    const key = `${label}\u0000${entryPoint}\u0000${code}`
    let p = this.pipelines.get(key)
    if (p === undefined) {
      const module = this.device.createShaderModule({ label, code })
      const name = entryPoint === "main" ? label : `${label}.${entryPoint}`
      p = this.device.createComputePipeline({ label: name, layout: "auto", compute: { module, entryPoint } })
      this.pipelines.set(key, p)
    }
    return p
  }

  // ---- buffers ------------------------------------------------------------------------------

  /** A storage buffer of at least `bytes` bytes, reused from the pool when one of that size is free. */
  allocBuffer(bytes: number, usage: GPUBufferUsageFlags = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST): GPUBuffer {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16)
    const key = `${size}:${usage}`
    const free = this.pool.get(key)
    const reused = free?.pop()
    if (reused !== undefined) return reused
    const buffer = this.device.createBuffer({ size, usage })
    this.sizes.set(buffer, size)
    this.live += size
    if (this.live > this.peak) this.peak = this.live
    return buffer
  }

  /** Returns a buffer to the pool. Safe mid-batch: dispatches run in recorded order. */
  releaseBuffer(buffer: GPUBuffer): void {
    const key = `${buffer.size}:${buffer.usage}`
    let free = this.pool.get(key)
    if (free === undefined) this.pool.set(key, (free = []))
    free.push(buffer)
  }

  tensor(shape: readonly number[], dtype: DType = "f32"): Tensor {
    return { buffer: this.allocBuffer(numel(shape) * 4), shape: [...shape], dtype }
  }

  release(...tensors: readonly (Tensor | undefined)[]): void {
    for (const t of tensors) if (t !== undefined) this.releaseBuffer(t.buffer)
  }

  /** Uploads host data into a new tensor. Flushes pending work first, since queue writes bypass the batch order. */
  upload(data: Float32Array | Uint32Array | Int32Array, shape: readonly number[] = [data.length]): Tensor {
    if (numel(shape) !== data.length) throw new Error(`upload: ${data.length} values do not fill shape [${shape.join("×")}]`)
    const dtype: DType = data instanceof Float32Array ? "f32" : data instanceof Uint32Array ? "u32" : "i32"
    const t = this.tensor(shape, dtype)
    this.write(t, data)
    return t
  }

  write(t: Tensor | GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
    this.flush()
    const buffer = "buffer" in t && !(t instanceof GPUBuffer) ? t.buffer : (t as GPUBuffer)
    this.device.queue.writeBuffer(buffer, byteOffset, data.buffer, data.byteOffset, data.byteLength)
  }

  /** Frees pooled buffers (not ones in use) and resets the peak to what is live now. */
  trim(): void {
    for (const free of this.pool.values()) for (const b of free) {
      this.live -= this.sizes.get(b) ?? b.size
      b.destroy()
    }
    this.pool.clear()
    this.releaseIdleTextures()
  }

  /** Destroys the pooled textures not in use (work recorded so far is submitted first: it may still read them). */
  releaseIdleTextures(): void {
    if (this.texturePool.size === 0) return
    this.flush()
    for (const free of this.texturePool.values()) for (const t of free) this.destroyTexture(t)
    this.texturePool.clear()
    this.texturePoolBytes = 0
  }

  /**
   * An rgba32float texture (sampled, copy destination) of exactly width × height texels, reused from the
   * pool when one is free; give it back with `releaseTexture`. Safe mid-batch, since work recorded later
   * (copies into it included) runs after the dispatches recorded before.
   */
  pooledTexture(width: number, height: number, label: string): GPUTexture {
    const reused = this.texturePool.get(`${width}x${height}`)?.pop()
    if (reused !== undefined) {
      this.texturePoolBytes -= width * height * 16
      return reused
    }
    // Sizes grow with the sequence (attention's K/V copies): past a cap, the idle ones go.
    if (this.texturePoolBytes > TEXTURE_POOL_BYTES) {
      this.flush() // recorded work may still read them
      for (const free of this.texturePool.values()) for (const t of free) this.destroyTexture(t)
      this.texturePool.clear()
      this.texturePoolBytes = 0
    }
    return this.createTexture({ label, size: [width, height], format: "rgba32float", usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST })
  }

  releaseTexture(texture: GPUTexture): void {
    this.texturePoolBytes += texture.width * texture.height * 16
    const key = `${texture.width}x${texture.height}`
    let free = this.texturePool.get(key)
    if (free === undefined) this.texturePool.set(key, (free = []))
    free.push(texture)
  }

  destroyBuffer(buffer: GPUBuffer): void {
    this.live -= this.sizes.get(buffer) ?? buffer.size
    buffer.destroy()
  }

  /** A texture counted in the memory stats (rgba32float/rgba32uint: 16 bytes a texel, rgba16float 8, else 4). */
  createTexture(desc: GPUTextureDescriptor & { size: readonly [number, number] }): GPUTexture {
    const texture = this.device.createTexture(desc)
    const format = String(desc.format)
    const bytes = desc.size[0] * desc.size[1] * (format.startsWith("rgba32") ? 16 : format.startsWith("rgba16") ? 8 : 4)
    this.sizes.set(texture, bytes)
    this.live += bytes
    if (this.live > this.peak) this.peak = this.live
    return texture
  }

  /** A view of a whole texture, counted by its bytes when a profiler totals what a dispatch binds. */
  textureView(texture: GPUTexture): GPUTextureView {
    const view = texture.createView()
    this.textureBytes.set(view, this.sizes.get(texture) ?? 0)
    return view
  }

  destroyTexture(texture: GPUTexture): void {
    this.live -= this.sizes.get(texture) ?? 0
    texture.destroy()
  }

  resetPeak(): void {
    this.peak = this.live
  }

  get stats(): RuntimeStats {
    return { liveBytes: this.live, peakBytes: this.peak, dispatches: this.dispatchCount, submits: this.submitCount, pipelines: this.pipelines.size }
  }

  // ---- dispatch -----------------------------------------------------------------------------

  /**
   * Records one dispatch. `uniforms` (≤ 256 bytes) binds at @binding(0); `bindings` follow at 1, 2, ….
   * Without uniforms, bindings start at @binding(0).
   */
  dispatch(
    pipeline: GPUComputePipeline,
    bindings: readonly Binding[],
    groups: readonly [number, number?, number?],
    uniforms?: ArrayBufferView,
  ): void {
    const [x, y = 1, z = 1] = groups
    if (x === 0 || y === 0 || z === 0) return
    const maxGroups = this.device.limits.maxComputeWorkgroupsPerDimension
    if (x > maxGroups || y > maxGroups || z > maxGroups) {
      throw new Error(`dispatch ${pipeline.label}: ${x}×${y}×${z} workgroups exceeds the limit of ${maxGroups} per dimension`)
    }
    const entries: GPUBindGroupEntry[] = []
    let next = 0
    if (uniforms !== undefined) {
      if (uniforms.byteLength > UNIFORM_SLOT) throw new Error(`dispatch ${pipeline.label}: uniforms exceed ${UNIFORM_SLOT} bytes`)
      if (this.uniformUsed === UNIFORM_SLOTS) this.flush()
      const offset = this.uniformUsed * UNIFORM_SLOT
      new Uint8Array(this.uniformData, offset, uniforms.byteLength).set(new Uint8Array(uniforms.buffer, uniforms.byteOffset, uniforms.byteLength))
      this.uniformUsed++
      entries.push({ binding: next++, resource: { buffer: this.uniformBuffer, offset, size: UNIFORM_SLOT } })
    }
    for (const b of bindings) entries.push({ binding: next++, resource: bindingResource(b) })
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries })
    const profiler = this.profiler
    if (profiler !== undefined) {
      const record: DispatchRecord = {
        kernel: pipeline.label,
        groups: [x, y, z],
        bytes: bindings.reduce((a, b) => a + this.bindingBytes(b), 0),
        replay: () => this.replayDispatch(pipeline, entries, uniforms, [x, y, z]),
      }
      profiler.record(record)
      if (profiler.timestamps) {
        // a pass of its own, timestamped at its start and end
        this.endPass()
        this.pass = this.currentEncoder().beginComputePass({ timestampWrites: profiler.passTimestamps(this, record) })
      }
    }
    const pass = this.currentPass()
    pass.setPipeline(pipeline)
    pass.setBindGroup(0, bindGroup)
    pass.dispatchWorkgroups(x, y, z)
    if (profiler?.timestamps === true) this.endPass()
    this.dispatchCount++
  }

  /** A recorded dispatch again, for profile replays: its uniforms in a buffer of their own (the arena is reused). */
  private replayDispatch(pipeline: GPUComputePipeline, entries: readonly GPUBindGroupEntry[], uniforms: ArrayBufferView | undefined, groups: readonly [number, number, number]) {
    let own: GPUBuffer | undefined
    let list = [...entries]
    if (uniforms !== undefined) {
      own = this.device.createBuffer({ size: UNIFORM_SLOT, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST })
      this.device.queue.writeBuffer(own, 0, uniforms.buffer, uniforms.byteOffset, uniforms.byteLength)
      list = [{ binding: 0, resource: { buffer: own } }, ...entries.slice(1)]
    }
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: list })
    return {
      run: () => {
        const pass = this.currentPass()
        pass.setPipeline(pipeline)
        pass.setBindGroup(0, bindGroup)
        pass.dispatchWorkgroups(...groups)
      },
      dispose: () => own?.destroy(),
    }
  }

  private bindingBytes(b: Binding): number {
    if (b instanceof GPUBuffer) return b.size
    if (b instanceof GPUTextureView) return this.textureBytes.get(b) ?? 0
    if ("shape" in b) return numel(b.shape) * 4
    return b.size ?? b.buffer.size - (b.offset ?? 0)
  }

  /** Records a buffer copy in order with the dispatches around it. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    const run = (): void => {
      this.endPass()
      this.currentEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes)
    }
    run()
    this.profiler?.record({ kernel: "copy buffer→buffer", groups: [0, 0, 0], bytes: 2 * bytes, replay: () => ({ run, dispose: () => {} }) })
  }

  /** Records a buffer → texture copy (rows of `bytesPerRow`, a multiple of 256, from byte `offset`) in batch order. */
  copyToTexture(src: GPUBuffer, bytesPerRow: number, texture: GPUTexture, width: number, height: number, offset = 0): void {
    const run = (): void => {
      this.endPass()
      this.currentEncoder().copyBufferToTexture({ buffer: src, bytesPerRow, offset }, { texture }, { width, height })
    }
    run()
    this.profiler?.record({ kernel: "copy buffer→texture", groups: [0, 0, 0], bytes: 2 * bytesPerRow * height, replay: () => ({ run, dispose: () => {} }) })
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (this.encoder === undefined) return
    this.endPass()
    if (this.uniformUsed > 0) {
      this.device.queue.writeBuffer(this.uniformBuffer, 0, this.uniformData, 0, this.uniformUsed * UNIFORM_SLOT)
      this.uniformUsed = 0
    }
    const afterSubmit = this.profiler?.beforeSubmit(this, this.encoder)
    this.device.queue.submit([this.encoder.finish()])
    afterSubmit?.()
    this.encoder = undefined
    this.submitCount++
  }

  /** Waits for all submitted work; rethrows the first GPU validation error seen. */
  async sync(): Promise<void> {
    this.flush()
    await this.device.queue.onSubmittedWorkDone()
    this.throwIfError()
  }

  /** Reads a tensor (or a byte range of a buffer) back to the host. */
  async read(t: Tensor): Promise<Float32Array>
  async read(t: Tensor, as: "u32"): Promise<Uint32Array>
  async read(t: Tensor, as?: "u32"): Promise<Float32Array | Uint32Array> {
    const bytes = numel(t.shape) * 4
    const bytesAligned = Math.ceil(bytes / 4) * 4
    const staging = this.allocBuffer(bytesAligned, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST)
    this.copy(t.buffer, 0, staging, 0, bytesAligned)
    this.flush()
    await staging.mapAsync(GPUMapMode.READ, 0, bytesAligned)
    const copyOut = staging.getMappedRange(0, bytesAligned).slice(0)
    staging.unmap()
    this.releaseBuffer(staging)
    this.throwIfError()
    return as === "u32" ? new Uint32Array(copyOut) : new Float32Array(copyOut)
  }

  destroy(): void {
    this.flush()
    this.trim()
    this.uniformBuffer.destroy()
    this.pipelines.clear()
    this.device.destroy()
  }

  private throwIfError(): void {
    const e = this.error
    if (e !== undefined) {
      this.error = undefined
      throw new Error(`GPU error: ${e.message}`)
    }
  }

  private createUniformArena(): GPUBuffer {
    return this.device.createBuffer({ size: UNIFORM_SLOT * UNIFORM_SLOTS, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST })
  }

  private currentEncoder(): GPUCommandEncoder {
    return (this.encoder ??= this.device.createCommandEncoder())
  }

  private currentPass(): GPUComputePassEncoder {
    return (this.pass ??= this.currentEncoder().beginComputePass())
  }

  private endPass(): void {
    if (this.pass !== undefined) {
      this.pass.end()
      this.pass = undefined
    }
  }
}

function bindingResource(b: Binding): GPUBindingResource {
  if (b instanceof GPUBuffer) return { buffer: b }
  if (b instanceof GPUTextureView) return b
  if ("shape" in b) return { buffer: b.buffer }
  const r: GPUBufferBinding = { buffer: b.buffer }
  if (b.offset !== undefined) r.offset = b.offset
  if (b.size !== undefined) r.size = b.size
  return r
}

/** Packs uniform params. WGSL structs of u32/i32/f32 scalars only, in declaration order. */
export function uniforms(values: readonly (readonly ["u32" | "i32" | "f32", number])[]): Uint32Array {
  const out = new ArrayBuffer(Math.max(16, Math.ceil((values.length * 4) / 16) * 16))
  const view = new DataView(out)
  values.forEach(([kind, v], i) => {
    if (kind === "f32") view.setFloat32(i * 4, v, true)
    else if (kind === "i32") view.setInt32(i * 4, v, true)
    else view.setUint32(i * 4, v, true)
  })
  return new Uint32Array(out)
}
