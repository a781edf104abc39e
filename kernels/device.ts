/**
 * Acquiring a Dawn device: the best adapter available (Vulkan/Metal/D3D12 on a real GPU; on a CPU-only
 * server Mesa's software drivers: llvmpipe through OpenGL ES and surfaceless EGL, lavapipe through Vulkan),
 * with the limits and features the kernels need.
 *
 * Environment (each overrides the automatic choice; an explicit option to `acquireRuntime` overrides it):
 * - ROPEWAY_BACKEND = auto | vulkan | opengles | native (Dawn's platform default: Metal, D3D12, Vulkan)
 * - ROPEWAY_KERNELS = cpu | gpu: the kernel variants (the adapter profile); default: cpu on a software
 *   adapter, gpu on a real one
 * - ROPEWAY_F16 = 0 | 1: request `shader-f16` (1 fails when the adapter lacks it); default: when offered
 */
import { Context, Effect, Layer } from "effect"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { create, globals } from "webgpu"
import { GpuUnavailable } from "../common/errors.ts"
import { type AdapterDescription, type AdapterProfile, type Backend, GpuRuntime } from "./runtime.ts"

// The WebGPU classes and constants (GPUBufferUsage, GPUBuffer, …) as globals, as in a browser.
Object.assign(globalThis, globals)

/** Debian packages of the two software adapters (lavapipe comes from bookworm-backports: Mesa 25). */
export const MESA_PACKAGES = "libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri"
export const LAVAPIPE_PACKAGES = "mesa-vulkan-drivers libvulkan1"

export { GpuUnavailable }

export interface RuntimeOptions {
  readonly backend?: Backend | "auto"
  readonly kernels?: AdapterProfile
  readonly f16?: boolean
}

/**
 * On a CPU-only machine both software adapters usually exist; this is the order they are preferred in,
 * from `bun run bench matmul scoring` on each (see README, "Adapters").
 */
export const SOFTWARE_PREFERENCE: readonly Backend[] = ["opengles", "vulkan"]

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

const FLAGS: Record<Backend, string[]> = { vulkan: ["backend=vulkan"], opengles: ["backend=opengles"], native: [] }
const REQUEST: Record<Backend, GPURequestAdapterOptions> = {
  vulkan: { powerPreference: "high-performance" },
  native: { powerPreference: "high-performance" },
  opengles: { featureLevel: "compatibility" } as GPURequestAdapterOptions,
}

/** Reads one of the ROPEWAY_* variables, failing with the variable and the values it takes. */
function envChoice<A extends string>(name: string, allowed: readonly A[]): A | undefined {
  const v = process.env[name]
  if (v === undefined || v === "") return undefined
  if (!(allowed as readonly string[]).includes(v)) {
    throw new GpuUnavailable({ message: `${name}=${v}: expected one of ${allowed.join(", ")}` })
  }
  return v as A
}

/** Resolved settings: explicit options first, then the environment, then automatic. */
export function runtimeSettings(options: RuntimeOptions = {}): { backend: Backend | "auto"; kernels?: AdapterProfile; f16?: boolean } {
  const f16Env = envChoice("ROPEWAY_F16", ["0", "1", "auto"])
  const f16 = options.f16 ?? (f16Env === "0" ? false : f16Env === "1" ? true : undefined)
  const kernels = options.kernels ?? envChoice("ROPEWAY_KERNELS", ["cpu", "gpu"])
  return {
    backend: options.backend ?? envChoice("ROPEWAY_BACKEND", ["auto", "vulkan", "opengles", "native"]) ?? "auto",
    ...(kernels === undefined ? {} : { kernels }),
    ...(f16 === undefined ? {} : { f16 }),
  }
}

/** A software rasterizer (llvmpipe, lavapipe, SwiftShader) rather than a GPU. */
const isSoftware = (info: GPUAdapterInfo, backend: Backend): boolean =>
  backend === "opengles" ||
  (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter === true ||
  /llvmpipe|lavapipe|swiftshader|software/.test(`${info.vendor} ${info.architecture} ${info.device} ${info.description}`.toLowerCase())

function unavailableMessage(reasons: readonly string[]): string {
  const lines = [`no WebGPU adapter found (${reasons.join("; ")}).`]
  if (process.platform === "linux") {
    if (process.env.EGL_PLATFORM !== "surfaceless") {
      lines.push("EGL_PLATFORM=surfaceless is not set in the environment that started the runtime; run through `npx bun run …` or `deno task …` (both set it) or prefix the command with EGL_PLATFORM=surfaceless.")
    }
    lines.push(`On a machine without a GPU, install Mesa's software drivers: apt-get install -y ${MESA_PACKAGES} (OpenGL ES), and ${LAVAPIPE_PACKAGES} from bookworm-backports (Vulkan; ./setup does both)`)
    lines.push("On a machine with a GPU, install its Vulkan driver and the loader: apt-get install -y libvulkan1")
  }
  return lines.join("\n")
}

/**
 * Whether the dynamic linker would find `name`, searched as ld.so does: LD_LIBRARY_PATH, its cache
 * (/etc/ld.so.cache), then the default folders. Dawn loads the Vulkan loader itself; without one it prints
 * a warning and finds no adapter, so this check keeps that warning away. Files only: no FFI, which
 * differs between runtimes.
 */
export function sharedLibraryPresent(name: string, env: NodeJS.ProcessEnv = process.env, cache = "/etc/ld.so.cache"): boolean {
  const dirs = (env.LD_LIBRARY_PATH ?? "").split(":").filter((d) => d !== "")
  if (dirs.some((d) => existsSync(join(d, name)))) return true
  try {
    if (readFileSync(cache).includes(`${name}\0`)) return true
  } catch {
    // no cache: the default folders below
  }
  return SYSTEM_LIBRARY_DIRS.some((d) => existsSync(join(d, name)))
}

const MULTIARCH = { x64: "x86_64-linux-gnu", arm64: "aarch64-linux-gnu" }[process.arch as string] ?? ""

/** The folders Linux's loader searches by default. */
export const SYSTEM_LIBRARY_DIRS: readonly string[] = [`/lib/${MULTIARCH}`, `/usr/lib/${MULTIARCH}`, "/lib64", "/usr/lib64", "/lib", "/usr/lib"]

/** Dawn's Vulkan backend (the native one on Linux) needs the Vulkan loader. */
const needsVulkanLoader = (backend: Backend): boolean =>
  backend === "vulkan" || (backend === "native" && process.platform === "linux")

interface Found {
  readonly backend: Backend
  readonly gpu: GPU
  readonly adapter: GPUAdapter
}

async function findAdapter(backend: Backend, reasons: string[]): Promise<Found | undefined> {
  if (needsVulkanLoader(backend) && process.platform === "linux" && !sharedLibraryPresent("libvulkan.so.1")) {
    reasons.push(`${backend}: no Vulkan loader (libvulkan.so.1)`)
    return undefined
  }
  const gpu: GPU = create(FLAGS[backend])
  const adapter = await gpu.requestAdapter(REQUEST[backend]).catch(() => null)
  if (adapter === null) {
    reasons.push(`${backend}: no adapter`)
    return undefined
  }
  return { backend, gpu, adapter }
}

/**
 * Whether this machine may have a GPU: on Linux a GPU driver makes device nodes (NVIDIA's, DRM render
 * nodes, AMD's compute node). Without any, looking for a Vulkan GPU only costs start-up time.
 */
function mayHaveGpu(): boolean {
  if (process.platform !== "linux") return true
  try {
    if (existsSync("/dev/nvidia0") || existsSync("/dev/kfd")) return true
    return existsSync("/dev/dri") && readdirSync("/dev/dri").some((n) => n.startsWith("renderD"))
  } catch {
    return true // not allowed to look (Deno guards /dev without --allow-all): ask Vulkan instead
  }
}

/**
 * The adapter `backend` asks for; for "auto", a real GPU when there is one, else the software adapter
 * that comes first in SOFTWARE_PREFERENCE.
 */
async function chooseAdapter(backend: Backend | "auto", reasons: string[]): Promise<Found | undefined> {
  if (backend !== "auto") return findAdapter(backend, reasons)
  const native = mayHaveGpu() ? await findAdapter(process.platform === "linux" ? "vulkan" : "native", reasons) : undefined
  if (native !== undefined && !isSoftware(native.adapter.info, native.backend)) return native
  for (const preferred of SOFTWARE_PREFERENCE) {
    if (native?.backend === preferred) return native
    const found = await findAdapter(preferred, reasons)
    if (found !== undefined) return found
  }
  return native
}

/** Acquires the adapter (see the module comment) and a device with raised limits. Plain async: tests and benches use it directly. */
export async function acquireRuntime(options: RuntimeOptions = {}): Promise<GpuRuntime> {
  const settings = runtimeSettings(options)
  const reasons: string[] = []
  const found = await chooseAdapter(settings.backend, reasons)
  if (found === undefined) throw new GpuUnavailable({ message: unavailableMessage(reasons) })
  const { backend, gpu, adapter } = found
  const offersF16 = adapter.features.has("shader-f16")
  if (settings.f16 === true && !offersF16) {
    throw new GpuUnavailable({ message: `ROPEWAY_F16=1: the ${backend} adapter (${adapter.info.description || adapter.info.device}) has no shader-f16` })
  }
  const f16 = settings.f16 ?? offersF16
  const requiredLimits: Record<string, number> = {}
  for (const name of WANTED_LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number | undefined>)[name]
    if (typeof v === "number") requiredLimits[name] = v
  }
  // Timestamp queries let the profiler (kernels/profile.ts) time dispatches in place.
  const requiredFeatures: GPUFeatureName[] = adapter.features.has("timestamp-query") ? ["timestamp-query"] : []
  if (f16) requiredFeatures.push("shader-f16")
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures })
  const info = adapter.info
  const software = isSoftware(info, backend)
  const description: AdapterDescription = {
    backend,
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
    software,
    profile: settings.kernels ?? (software ? "cpu" : "gpu"),
    f16,
  }
  return new GpuRuntime(device, description, gpu)
}

export const describeAdapter = (a: AdapterDescription): string =>
  `${[a.device.replace(/-+$/, ""), a.description].filter((s) => s !== "").join(", ") || a.vendor} (${a.backend}, ${a.profile} kernels${a.f16 ? ", f16" : ""})`

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
