/**
 * `ropeway rope --plot FILE`: the effective table's divisors λ_i at one length against PI, NTK and YaRN at
 * the same scale s = max(1, L / L0) (below the original context the baselines do nothing, as in evaluate).
 */
import { writeFileAtomic } from "../../common/files.ts"
import { baselineSeries, factorCurveSpec, fmt } from "./charts.ts"
import { renderSvg, type VlSpec } from "./render.ts"

/** The parts of cli/commands/rope.ts's RopeReport (which extends this) the plot reads. */
export interface RopePlotInput {
  readonly model: string
  readonly length: number
  readonly method: string
  readonly reason: string
  readonly rotaryDim: number
  readonly base: number
  readonly maxPositions: number
  readonly originalMaxPositions: number | null
  readonly startTokens: number
  readonly attentionScale: number
  readonly factors: readonly number[] | readonly (readonly number[])[]
}

export function ropePlotSpec(r: RopePlotInput): VlSpec {
  const L0 = r.originalMaxPositions ?? r.maxPositions
  const s = Math.max(1, r.length / L0)
  const perLayer = Array.isArray(r.factors[0])
  const factors = (perLayer ? r.factors[0] : r.factors) as readonly number[]
  const geometry = { rotaryDim: r.rotaryDim, base: r.base, originalLength: L0 }
  return factorCurveSpec({
    title: `RoPE factors at length ${r.length} vs PI, NTK and YaRN at s = ${fmt(s)}`,
    subtitle:
      `${r.model === "" ? "model" : r.model}: ${r.reason}; rotary dim ${r.rotaryDim}, base ${fmt(r.base)}, L0 ${L0}` +
      `${r.startTokens > 0 ? `, n̂ ${r.startTokens}` : ""}, attention scale ${fmt(r.attentionScale)}${perLayer ? "; layer 0 of per-layer factors" : ""}`,
    series: [{ name: `${r.method} (effective)`, factors }, ...baselineSeries(geometry, s)],
  })
}

/** Renders the plot and writes it (atomically) to `path`; returns the SVG. */
export async function writeRopePlot(path: string, r: RopePlotInput): Promise<string> {
  const svg = await renderSvg(ropePlotSpec(r))
  writeFileAtomic(path, svg)
  return svg
}
