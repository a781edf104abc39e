/**
 * Rotary position embedding on the GPU, from a RoPE table (kernels/rope-table.ts).
 *
 * The table's float64 inverse frequencies become 64-bit fixed-point turns per position on the host;
 * the kernel forms n·θ mod 2π exactly in integers (see rope.wgsl), so angles stay within ~3e-7 rad of
 * float64 at any u32 position.
 */
import { strideGroups } from "./add.ts"
import { type RopeTable, invFreqAt } from "./rope-table.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import { type Tensor, expectShape } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./rope.wgsl", import.meta.url)

export interface GpuRopeTable {
  /** Per (stored layer, quad of pairs): 4 × vec4<u32> = [hi, lo, origHi, origLo]. */
  readonly buffer: GPUBuffer
  readonly rotaryDim: number
  /** Layers the table serves (applyRope checks `layer` against it). */
  readonly numLayers: number
  /** Layers stored: 1 when all layers share one invFreq. */
  readonly storedLayers: number
  readonly startTokens: number
  readonly attentionScale: number
}

const TWO_32 = 2 ** 32

/**
 * θ/(2π) mod 1 as a 0.64 fixed-point fraction [hi, lo]. Only the fractional part matters, since
 * positions are integers. The float64 quotient is within ~1e-16 relative of the true one, i.e.
 * ≤ ~1e-9 rad of drift at n = 2^22.
 */
export function turnsFixedPoint(invFreq: number): [number, number] {
  if (!Number.isFinite(invFreq)) throw new Error(`rope: inverse frequency ${invFreq} is not finite`)
  let f = invFreq / (2 * Math.PI)
  f -= Math.floor(f)
  const scaled = f * TWO_32 // exact: scaling by a power of two
  let hi = Math.floor(scaled)
  let lo = Math.floor((scaled - hi) * TWO_32)
  if (hi >= TWO_32) hi = TWO_32 - 1 // f rounded up to 1 − tiny
  if (lo >= TWO_32) lo = TWO_32 - 1
  return [hi, lo]
}

export function uploadRopeTable(rt: GpuRuntime, table: RopeTable, numLayers: number): GpuRopeTable {
  const { rotaryDim } = table
  if (!Number.isInteger(rotaryDim) || rotaryDim <= 0 || rotaryDim % 2 !== 0) throw new Error(`uploadRopeTable: rotaryDim ${rotaryDim} must be a positive even integer`)
  if (!Number.isInteger(numLayers) || numLayers < 1) throw new Error(`uploadRopeTable: numLayers ${numLayers} must be ≥ 1`)
  const half = rotaryDim / 2
  const quads = Math.ceil(half / 4)
  const shared = table.invFreq instanceof Float64Array
  const storedLayers = shared ? 1 : numLayers
  if (!shared && (table.invFreq as readonly Float64Array[]).length === 0) throw new Error("uploadRopeTable: invFreq is an empty list of layers")
  if (table.originalInvFreq.length < half) throw new Error(`uploadRopeTable: originalInvFreq has ${table.originalInvFreq.length} values, need ${half}`)
  const data = new Uint32Array(storedLayers * quads * 16) // zero-padded quads rotate by 0
  for (let l = 0; l < storedLayers; l++) {
    const inv = invFreqAt(table, l)
    if (inv.length < half) throw new Error(`uploadRopeTable: invFreq of layer ${l} has ${inv.length} values, need ${half}`)
    for (let i = 0; i < half; i++) {
      const base = (l * quads + (i >> 2)) * 16 + (i & 3)
      const [hi, lo] = turnsFixedPoint(inv[i]!)
      const [ohi, olo] = turnsFixedPoint(table.originalInvFreq[i]!)
      data[base] = hi
      data[base + 4] = lo
      data[base + 8] = ohi
      data[base + 12] = olo
    }
  }
  const buffer = rt.allocBuffer(data.byteLength)
  rt.write(buffer, data)
  return { buffer, rotaryDim, numLayers, storedLayers, startTokens: table.startTokens, attentionScale: table.attentionScale }
}

export function releaseRopeTable(rt: GpuRuntime, t: GpuRopeTable): void {
  rt.releaseBuffer(t.buffer)
}

export interface RopeOptions {
  readonly heads: number
  readonly headDim: number
  readonly layer: number
}

/**
 * Rotates x [T, heads·headDim] in place at the given absolute positions (u32 [T]; they may restart for
 * packed documents). Dims ≥ rotaryDim of each head pass through unchanged.
 */
export function applyRope(rt: GpuRuntime, x: Tensor, positions: Tensor, table: GpuRopeTable, opts: RopeOptions): void {
  const { heads, headDim, layer } = opts
  const T = x.shape[0] ?? 0
  expectShape("applyRope", "x", x, [T, heads * headDim])
  expectShape("applyRope", "positions", positions, [T])
  if (x.dtype !== "f32") throw new Error(`applyRope: x must be f32, got ${x.dtype}`)
  if (positions.dtype !== "u32") throw new Error(`applyRope: positions must be u32, got ${positions.dtype}`)
  if (table.rotaryDim > headDim) throw new Error(`applyRope: rotaryDim ${table.rotaryDim} exceeds headDim ${headDim}`)
  if (!Number.isInteger(layer) || layer < 0 || layer >= table.numLayers) throw new Error(`applyRope: layer ${layer} outside the table's ${table.numLayers} layers`)
  const half = table.rotaryDim / 2
  const quads = Math.ceil(half / 4)
  const vec = headDim % 4 === 0 && half % 4 === 0
  const count = T * (vec ? quads : half)
  const params = uniforms([
    ["u32", count],
    ["u32", quads],
    ["u32", half],
    ["u32", heads],
    ["u32", headDim],
    ["u32", (table.storedLayers === 1 ? 0 : layer) * quads],
    ["u32", table.startTokens],
    ["f32", table.attentionScale],
  ])
  rt.dispatch(rt.pipeline("rope", src, vec ? "main4" : "main1"), [table.buffer, positions, x], [strideGroups(rt, count, 64)], params)
}
