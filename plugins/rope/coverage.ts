/** How long an input a model's RoPE settings are meant for (training's seqLen is checked against it). */
import { inputError } from "../../common/errors.ts"
import type { RopeSpec } from "./types.ts"

/**
 * The longest input a model's RoPE settings are meant for: max_position_embeddings for plain RoPE and
 * HF longrope; the last set's max_length for a factor-set table; L0 × factor (or max_position_embeddings
 * if larger) for the methods with a scale factor (linear, dynamic, yarn, llama3, ntk).
 */
export function ropeCoverage(spec: RopeSpec): { length: number; why: string } {
  const s = spec.scaling
  const type = s === undefined ? "default" : String(s["rope_type"] ?? s["type"] ?? "default")
  if (type === "default") return { length: spec.maxPositions, why: `max_position_embeddings ${spec.maxPositions}, plain RoPE (no rope_scaling)` }
  if (type === "longrope-research") {
    const sets = s?.["sets"]
    const last = Array.isArray(sets) ? (sets[sets.length - 1] as { max_length?: unknown } | undefined)?.max_length : undefined
    if (typeof last === "number") return { length: last, why: `the last factor set's max_length ${last}` }
  }
  if (type === "longrope" || type === "su") return { length: spec.maxPositions, why: `max_position_embeddings ${spec.maxPositions} (rope_type ${type})` }
  const factor = s?.["factor"]
  if (typeof factor === "number" && factor > 0) {
    const L0 = spec.originalMaxPositions ?? spec.maxPositions
    const n = Math.max(spec.maxPositions, Math.floor(L0 * factor))
    return { length: n, why: `rope_type ${type} with factor ${factor} over ${L0} positions` }
  }
  return { length: spec.maxPositions, why: `max_position_embeddings ${spec.maxPositions} (rope_type ${type})` }
}

/** Fails when `seqLen` is longer than the RoPE settings cover, naming the param. */
export function checkCoverage(stage: string, seqLen: number, spec: RopeSpec, fix: string): void {
  const c = ropeCoverage(spec)
  if (seqLen > c.length) throw inputError(`${stage}.seqLen`, `${seqLen} is longer than the RoPE table covers (${c.why}); ${fix}`)
}
