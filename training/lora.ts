/**
 * LoRA adapters (Hu et al. 2021, PEFT conventions): for a linear layer W [out, in] (HF layout, y = x·Wᵀ),
 * A [r, in] and B [out, r] with W' = W + (alpha/r)·B·A. B starts at 0, so the adapted model equals the
 * base one at step 0; A is seeded, PEFT's default kaiming_uniform_(a=√5), i.e. U(−1/√in, 1/√in).
 * Parameter names follow PEFT: `<layer>.lora_A.weight`, `<layer>.lora_B.weight`.
 */
import { matmul } from "../kernels/matmul.ts"
import type { GpuRuntime } from "../kernels/runtime.ts"
import { axpyInPlace } from "../kernels/scale.ts"
import { type Tensor, expectShape } from "../kernels/tensor.ts"
import { Rng } from "../common/rng.ts"
import type { ParamInit } from "./optimizer.ts"

export interface LoraConfig {
  readonly rank: number
  readonly alpha: number
  readonly seed: number
}

export interface LoraAdapter {
  /** The adapted layer's name, e.g. `model.layers.0.self_attn.q_proj`. */
  readonly name: string
  readonly inFeatures: number
  readonly outFeatures: number
  readonly rank: number
  /** alpha / rank. */
  readonly scaling: number
  readonly a: Tensor
  readonly b: Tensor
}

/** Host initial values: A uniform in ±1/√in from a stream of `seed` keyed by the layer name; B zeros. */
export function loraInitialValues(name: string, inFeatures: number, outFeatures: number, cfg: LoraConfig): { a: Float32Array; b: Float32Array } {
  if (!Number.isInteger(cfg.rank) || cfg.rank < 1) throw new RangeError(`lora ${name}: rank must be an integer ≥ 1, got ${cfg.rank}`)
  if (!(cfg.alpha > 0)) throw new RangeError(`lora ${name}: alpha must be > 0, got ${cfg.alpha}`)
  // One stream per layer (hash of the name), so adding an adapter elsewhere does not reshuffle this one.
  let h = 0
  for (let i = 0; i < name.length; i++) h = (Math.imul(h, 31) + name.charCodeAt(i)) >>> 0
  const rng = Rng.seeded(cfg.seed, h)
  const bound = 1 / Math.sqrt(inFeatures)
  const a = Float32Array.from({ length: cfg.rank * inFeatures }, () => (rng.float() * 2 - 1) * bound)
  return { a, b: new Float32Array(outFeatures * cfg.rank) }
}

export function createLora(rt: GpuRuntime, name: string, inFeatures: number, outFeatures: number, cfg: LoraConfig): LoraAdapter {
  const { a, b } = loraInitialValues(name, inFeatures, outFeatures, cfg)
  return {
    name, inFeatures, outFeatures, rank: cfg.rank, scaling: cfg.alpha / cfg.rank,
    a: rt.upload(a, [cfg.rank, inFeatures]), b: rt.upload(b, [outFeatures, cfg.rank]),
  }
}

/** The adapter's trainable parameters for an `Optimizer`. */
export const loraParams = (l: LoraAdapter): ParamInit[] => [
  { name: `${l.name}.lora_A.weight`, value: l.a },
  { name: `${l.name}.lora_B.weight`, value: l.b },
]

/** y += scaling·(x·Aᵀ)·Bᵀ for x [T, in], y [T, out]: the adapter's share of the layer's forward. */
export function addLoraForward(rt: GpuRuntime, y: Tensor, x: Tensor, l: LoraAdapter): void {
  const t = x.shape[0]!
  expectShape("lora forward", "x", x, [t, l.inFeatures])
  expectShape("lora forward", "y", y, [t, l.outFeatures])
  const h = matmul(rt, x, l.a, { transB: true })
  const d = matmul(rt, h, l.b, { transB: true })
  axpyInPlace(rt, y, d, l.scaling)
  rt.release(h, d)
}

/** W += scaling·B·A on the GPU, W [out, in] (for export: the merged model needs no adapter). */
export function mergeLora(rt: GpuRuntime, w: Tensor, l: LoraAdapter): void {
  expectShape("lora merge", "W", w, [l.outFeatures, l.inFeatures])
  const delta = matmul(rt, l.b, l.a)
  axpyInPlace(rt, w, delta, l.scaling)
  rt.release(delta)
}

/** Host float64 merge W' = W + scaling·B·A, rounded once to f32. */
export function mergeLoraHost(w: ArrayLike<number>, a: ArrayLike<number>, b: ArrayLike<number>, outF: number, inF: number, rank: number, scaling: number): Float32Array {
  if (w.length !== outF * inF || a.length !== rank * inF || b.length !== outF * rank) {
    throw new Error(`lora merge: sizes W ${w.length}, A ${a.length}, B ${b.length} do not fit [${outF}, ${inF}] at rank ${rank}`)
  }
  const out = new Float32Array(outF * inF)
  for (let o = 0; o < outF; o++) {
    for (let i = 0; i < inF; i++) {
      let s = 0
      for (let k = 0; k < rank; k++) s += b[o * rank + k]! * a[k * inF + i]!
      out[o * inF + i] = w[o * inF + i]! + scaling * s
    }
  }
  return out
}

export function releaseLora(rt: GpuRuntime, l: LoraAdapter): void {
  rt.release(l.a, l.b)
}
