/**
 * RoPE backward: the transpose of the forward rotation, i.e. rotation by −angle with the same attention
 * scale m, start tokens, per-layer frequencies and partial rotary dims. It runs the forward kernel
 * (rope.ts) on an inverse table whose turn fractions are negated exactly (rope-backward.wgsl), so the
 * angle arithmetic is the forward's own.
 */
import { type GpuRopeTable, type RopeOptions, applyRope } from "./rope.ts"
import type { GpuRuntime } from "./runtime.ts"
import { uniforms } from "./runtime.ts"
import type { Tensor } from "./tensor.ts"
import { wgsl } from "./wgsl.ts"

const src = wgsl("./rope-backward.wgsl", import.meta.url)

/** The table that rotates by −angle. Make it once per forward table; free it with releaseRopeTable. */
export function inverseRopeTable(rt: GpuRuntime, table: GpuRopeTable): GpuRopeTable {
  const quads = Math.ceil(table.rotaryDim / 2 / 4)
  const entries = table.storedLayers * quads * 4
  const buffer = rt.allocBuffer(entries * 16)
  rt.dispatch(rt.pipeline("rope-backward", src), [table.buffer, buffer], [Math.ceil(entries / 2 / 64)], uniforms([["u32", entries]]))
  return { ...table, buffer }
}

/**
 * dx = Rᵀ·dy for x rotated by applyRope(x, positions, table, opts): rotates dy [T, heads·headDim] in
 * place. `inverse` (from inverseRopeTable) saves one tiny dispatch per call; without it the inverse is
 * made and freed around this call.
 */
export function applyRopeBackward(rt: GpuRuntime, dy: Tensor, positions: Tensor, table: GpuRopeTable, opts: RopeOptions, inverse?: GpuRopeTable): void {
  const inv = inverse ?? inverseRopeTable(rt, table)
  applyRope(rt, dy, positions, inv, opts)
  if (inverse === undefined) rt.releaseBuffer(inv.buffer) // safe mid-batch: later users of the buffer run after this dispatch
}
