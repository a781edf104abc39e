/**
 * Acquiring a Dawn device: the best adapter available (Vulkan/Metal/D3D12 on a real GPU; Mesa's llvmpipe
 * through OpenGL ES and surfaceless EGL on a CPU-only server), with the limits the kernels need.
 */
import { Context, Data, Effect, Layer } from "effect"
import { dlopen } from "bun:ffi"
import { create, globals } from "webgpu"
import { type AdapterDescription, type AdapterProfile, GpuRuntime } from "./runtime.ts"

// The WebGPU classes and constants (GPUBufferUsage, GPUBuffer, …) as globals, as in a browser.
Object.assign(globalThis, globals)

export const MESA_PACKAGES = "libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri"

export class GpuUnavailable extends Data.TaggedError("GpuUnavailable")<{ readonly message: string }> {}

/** Limits raised above WebGPU's defaults (compat defaults are far below what adapters grant). */
const WANTED_LIMITS = [
  "maxStorageBuffersPerShaderStage",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupStorageSize",
  "maxTextureDimension2D",
  "maxUniformBufferBindingSize",
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupsPerDimension",
  "maxSampledTexturesPerShaderStage",
] as const

interface Attempt {
  readonly backend: string
  readonly flags: string[]
  readonly options: GPURequestAdapterOptions
}

const ATTEMPTS: readonly Attempt[] = [
  { backend: "default", flags: [], options: { powerPreference: "high-performance" } },
  { backend: "opengles", flags: ["backend=opengles"], options: { featureLevel: "compatibility" } as GPURequestAdapterOptions },
]

function profileOf(info: GPUAdapterInfo, backend: string): AdapterProfile {
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase()
  return backend === "opengles" || /llvmpipe|lavapipe|swiftshader|software/.test(text) ? "cpu" : "gpu"
}

function unavailableMessage(reasons: readonly string[]): string {
  const lines = [`no WebGPU adapter found (${reasons.join("; ")}).`]
  if (process.platform === "linux") {
    if (process.env.EGL_PLATFORM !== "surfaceless") {
      lines.push("EGL_PLATFORM=surfaceless is not set in the environment that started Bun; run through `bun run …` (package.json sets it) or prefix the command with EGL_PLATFORM=surfaceless.")
    }
    lines.push(`On a machine without a GPU, install Mesa's software driver: apt-get install -y ${MESA_PACKAGES}`)
    lines.push("On a machine with a GPU, install its Vulkan driver and the loader: apt-get install -y libvulkan1")
  }
  return lines.join("\n")
}

/** Dawn's native backend on Linux needs the Vulkan loader; without it, skip straight to OpenGL ES (and its warning). */
function vulkanLoaderPresent(): boolean {
  if (process.platform !== "linux") return true
  try {
    dlopen("libvulkan.so.1", {}).close()
    return true
  } catch {
    return false
  }
}

/** Acquires the best adapter and a device with raised limits. Plain async: tests and benches use it directly. */
export async function acquireRuntime(options: { readonly backend?: "default" | "opengles" } = {}): Promise<GpuRuntime> {
  const reasons: string[] = []
  const wanted = process.env.ROPEWAY_BACKEND ?? options.backend
  for (const attempt of ATTEMPTS) {
    if (wanted !== undefined && wanted !== attempt.backend) continue
    if (attempt.backend === "default" && !vulkanLoaderPresent()) {
      reasons.push("native: no Vulkan loader (libvulkan.so.1)")
      continue
    }
    const gpu: GPU = create(attempt.flags)
    const adapter = await gpu.requestAdapter(attempt.options).catch(() => null)
    if (adapter === null) {
      reasons.push(`${attempt.backend}: no adapter`)
      continue
    }
    const requiredLimits: Record<string, number> = {}
    for (const name of WANTED_LIMITS) {
      const v = (adapter.limits as unknown as Record<string, number | undefined>)[name]
      if (typeof v === "number") requiredLimits[name] = v
    }
    // Timestamp queries let the profiler (kernels/profile.ts) time dispatches in place.
    const requiredFeatures = (["timestamp-query"] as const).filter((f) => adapter.features.has(f))
    const device = await adapter.requestDevice({ requiredLimits, requiredFeatures })
    const info = adapter.info
    const description: AdapterDescription = {
      backend: attempt.backend === "default" ? "native" : attempt.backend,
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      profile: profileOf(info, attempt.backend),
    }
    return new GpuRuntime(device, description, gpu)
  }
  throw new GpuUnavailable({ message: unavailableMessage(reasons) })
}

export const describeAdapter = (a: AdapterDescription): string =>
  `${[a.device.replace(/-+$/, ""), a.description].filter((s) => s !== "").join(", ") || a.vendor} (${a.backend}, ${a.profile} kernels)`

/** The GPU as an Effect service: acquired once per scope, destroyed when the scope closes. */
export class Gpu extends Context.Service<Gpu, GpuRuntime>()("ropeway/Gpu") {
  static readonly layer: Layer.Layer<Gpu, GpuUnavailable> = Layer.effect(
    Gpu,
    Effect.acquireRelease(
      Effect.tryPromise({
        try: () => acquireRuntime(),
        catch: (e) => (e instanceof GpuUnavailable ? e : new GpuUnavailable({ message: String(e) })),
      }),
      (rt) => Effect.sync(() => rt.destroy()),
    ),
  )
}
