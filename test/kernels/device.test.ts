// Adapter choice: the Vulkan loader check, the backend / kernel-profile / f16 switches, and, on a machine
// with both software drivers (./setup installs them), which adapter each setting gets.
import { afterAll, beforeAll, describe, expect, test } from "bun:test"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { create } from "webgpu"
import { acquireRuntime, runtimeSettings, sharedLibraryPresent, SOFTWARE_PREFERENCE } from "../../kernels/device.ts"

const dir = mkdtempSync(join(tmpdir(), "ropeway-device-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("sharedLibraryPresent", () => {
  test("finds a library on LD_LIBRARY_PATH or in the linker cache, and not a missing one", () => {
    writeFileSync(join(dir, "libropeway-probe.so.3"), "")
    const cache = join(dir, "ld.so.cache")
    writeFileSync(cache, "glibc-ld.so.cache1.1\0libother.so.1\0libcached.so.2\0/usr/lib/libcached.so.2\0")
    expect(sharedLibraryPresent("libropeway-probe.so.3", { LD_LIBRARY_PATH: `/nonexistent:${dir}` }, cache)).toBe(true)
    expect(sharedLibraryPresent("libropeway-probe.so.3", {}, cache)).toBe(false)
    expect(sharedLibraryPresent("libcached.so.2", {}, cache)).toBe(true)
    expect(sharedLibraryPresent("libcached.so", {}, cache)).toBe(false) // a prefix of a cached name is not that name
  })
})

describe("runtimeSettings", () => {
  const withEnv = <A>(env: Record<string, string>, f: () => A): A => {
    const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
    Object.assign(process.env, env)
    try {
      return f()
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  }
  test("environment variables, overridden by explicit options; bad values name the variable", () => {
    const env = { ROPEWAY_BACKEND: "vulkan", ROPEWAY_KERNELS: "gpu", ROPEWAY_F16: "0" }
    expect(withEnv(env, () => runtimeSettings())).toEqual({ backend: "vulkan", kernels: "gpu", f16: false })
    expect(withEnv(env, () => runtimeSettings({ backend: "opengles", kernels: "cpu", f16: true }))).toEqual({ backend: "opengles", kernels: "cpu", f16: true })
    expect(withEnv({ ROPEWAY_BACKEND: "", ROPEWAY_KERNELS: "", ROPEWAY_F16: "auto" }, () => runtimeSettings())).toEqual({ backend: "auto" })
    expect(() => withEnv({ ROPEWAY_BACKEND: "metal" }, () => runtimeSettings())).toThrow("ROPEWAY_BACKEND=metal: expected one of auto, vulkan, opengles, native")
    expect(() => withEnv({ ROPEWAY_KERNELS: "fast" }, () => runtimeSettings())).toThrow("ROPEWAY_KERNELS=fast: expected one of cpu, gpu")
  })
})

/** Whether Dawn finds an adapter for these flags, asked directly (not through device.ts). */
const dawnHas = async (flags: string[], options: GPURequestAdapterOptions): Promise<boolean> =>
  (await create(flags).requestAdapter(options).catch(() => null)) !== null

const hasVulkan = sharedLibraryPresent("libvulkan.so.1") && (await dawnHas(["backend=vulkan"], {}))
const hasGles = await dawnHas(["backend=opengles"], { featureLevel: "compatibility" } as GPURequestAdapterOptions)
if (!hasVulkan || !hasGles) console.warn(`device choice: SKIPPED, needs both software adapters (Vulkan ${hasVulkan}, OpenGL ES ${hasGles}); ./setup installs them`)

describe.skipIf(!hasVulkan || !hasGles)("adapter choice with both drivers installed", () => {
  // CI runs this file with ROPEWAY_* set for a whole matrix entry; these tests pick their own settings.
  const saved = { ...process.env }
  beforeAll(() => {
    for (const k of ["ROPEWAY_BACKEND", "ROPEWAY_KERNELS", "ROPEWAY_F16"]) delete process.env[k]
  })
  afterAll(() => {
    for (const k of ["ROPEWAY_BACKEND", "ROPEWAY_KERNELS", "ROPEWAY_F16"]) if (saved[k] !== undefined) process.env[k] = saved[k]
  })

  const adapterOf = async (options: Parameters<typeof acquireRuntime>[0]) => {
    const rt = await acquireRuntime(options)
    const features = [...rt.device.features]
    rt.destroy()
    return { ...rt.adapter, features }
  }

  test("each backend when asked for; auto picks the preferred software adapter with cpu kernels", async () => {
    const vk = await adapterOf({ backend: "vulkan" })
    expect(vk).toMatchObject({ backend: "vulkan", software: true, profile: "cpu", f16: true })
    expect(vk.features).toContain("shader-f16")
    expect(await adapterOf({ backend: "opengles" })).toMatchObject({ backend: "opengles", software: true, profile: "cpu", f16: false })
    expect(await adapterOf({ backend: "auto" })).toMatchObject({ backend: SOFTWARE_PREFERENCE[0], profile: "cpu" })
  })

  test("kernel profile and f16 can be forced", async () => {
    const vk = await adapterOf({ backend: "vulkan", kernels: "gpu", f16: false })
    expect(vk).toMatchObject({ backend: "vulkan", profile: "gpu", f16: false })
    expect(vk.features).not.toContain("shader-f16")
    await expect(acquireRuntime({ backend: "opengles", f16: true })).rejects.toThrow("has no shader-f16")
  })
})
