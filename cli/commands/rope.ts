/**
 * `ropeway rope --model DIR [--rope-scaling JSON] --length L [--json] [--plot FILE]`: the effective RoPE table for an
 * input of L tokens: per-dimension divisors λ_i = θ_i/θ'_i, start tokens n̂, attention scale, and which
 * factor set the method chose and why. `--plot FILE` also writes an SVG of λ_i against PI, NTK and YaRN at
 * the same scale.
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import type { ModelFamily } from "../../plugins/models/family.ts"
import { BUILTIN_FAMILIES, familiesOf, familyFor } from "../../plugins/models/registry.ts"
import { registryFromFlags } from "../workflow.ts"
import { pluginFlag } from "./score.ts"
import { parseScalingJson } from "../../plugins/rope/formats.ts"
import { resolveRope, tableFactors } from "../../plugins/rope/index.ts"
import type { RopePlotInput } from "../../plugins/report/rope-plot.ts"
import type { RopeSpec } from "../../plugins/rope/types.ts"
import { inputError } from "../../common/errors.ts"

/** What the plot reads (model, length, method and reason, rotary dim, base, context lengths, n̂, attention scale) and the table itself. */
export interface RopeReport extends RopePlotInput {
  readonly headDim: number
  /** λ_i, or one row per layer for per-layer tables. */
  readonly factors: number[] | number[][]
  /** θ'_i (per layer likewise). */
  readonly invFreq: number[] | number[][]
  /** θ_i of the base model. */
  readonly originalInvFreq: number[]
}

/** The report for a RoPE spec at one length (pure; the command adds the folder reading). */
export function ropeReportFor(spec: RopeSpec, length: number, model = ""): RopeReport {
  const t = resolveRope(spec)(length)
  const factors = tableFactors(t)
  const arr = (a: Float64Array | readonly Float64Array[]): number[] | number[][] =>
    a instanceof Float64Array ? Array.from(a) : a.map((r) => Array.from(r))
  return {
    model,
    length,
    method: t.method,
    reason: t.reason,
    headDim: spec.headDim,
    rotaryDim: t.rotaryDim,
    base: spec.base,
    maxPositions: spec.maxPositions,
    originalMaxPositions: spec.originalMaxPositions ?? null,
    startTokens: t.startTokens,
    attentionScale: t.attentionScale,
    factors: arr(factors),
    invFreq: arr(t.invFreq),
    originalInvFreq: Array.from(t.originalInvFreq),
  }
}

/** Reads DIR/config.json with its family (optionally replacing its rope_scaling) and reports the table at `length`. */
export function ropeReport(modelDir: string, length: number, ropeScaling?: string, families: readonly ModelFamily[] = BUILTIN_FAMILIES): RopeReport {
  if (!Number.isInteger(length) || length < 1) throw inputError("--length", `expected an integer ≥ 1, got ${length}`)
  const override = ropeScaling === undefined ? {} : { ropeScaling: parseScalingJson(ropeScaling) ?? null }
  const config = familyFor(families, modelDir).readConfig(modelDir, override)
  const spec: RopeSpec = { ...config.rope, scalingKey: ropeScaling === undefined ? "rope_scaling" : "--rope-scaling" }
  return ropeReportFor(spec, length, modelDir)
}

const num = (x: number, digits = 6) => (Number.isInteger(x) ? String(x) : x.toPrecision(digits))

/** Human-readable form: a header, then one line per frequency pair. */
export function formatRopeReport(r: RopeReport): string {
  const perLayer = Array.isArray(r.factors[0])
  const factors = (perLayer ? (r.factors as number[][])[0]! : r.factors) as number[]
  const inv = (perLayer ? (r.invFreq as number[][])[0]! : r.invFreq) as number[]
  const lines = [
    `RoPE table for ${r.model || "model"} at length ${r.length}`,
    `  method          ${r.method}`,
    `  chosen          ${r.reason}`,
    `  rotary dim      ${r.rotaryDim} of head_dim ${r.headDim}, base ${num(r.base)}`,
    `  context         max_position_embeddings ${r.maxPositions}` +
      (r.originalMaxPositions === null ? "" : `, original ${r.originalMaxPositions}`),
    `  start tokens n̂  ${r.startTokens}${r.startTokens > 0 ? " (positions below keep the original rotation, no attention scale)" : ""}`,
    `  attention scale ${num(r.attentionScale)} (multiplies cos and sin; logits × ${num(r.attentionScale ** 2)})`,
  ]
  if (perLayer) lines.push(`  per-layer factors (${r.factors.length} layers); showing layer 0, --json gives all`)
  lines.push("", "    i        θ_i           λ_i           θ'_i")
  factors.forEach((l, i) => {
    lines.push(`  ${String(i).padStart(3)}  ${r.originalInvFreq[i]!.toExponential(6).padStart(13)}  ${num(l, 7).padStart(12)}  ${inv[i]!.toExponential(6).padStart(13)}`)
  })
  return lines.join("\n") + "\n"
}

export const rope = Command.make(
  "rope",
  {
    model: Flag.String("model").pipe(Flag.withDescription("Hugging Face model folder (reads its config.json)")),
    ropeScaling: Flag.String("rope-scaling").pipe(
      Flag.withDescription("rope_scaling JSON replacing the config's (null or {} for plain RoPE)"),
      Flag.optional,
    ),
    length: Flag.Int("length").pipe(Flag.withDescription("input length in tokens")),
    json: Flag.Boolean("json").pipe(Flag.withDescription("print JSON instead of a table"), Flag.withDefault(false)),
    plot: Flag.String("plot").pipe(Flag.withDescription("also write an SVG of the factor curve against PI, NTK and YaRN at the same scale"), Flag.optional),
    plugin: pluginFlag,
  },
  (o) =>
    Effect.gen(function* () {
      const families = familiesOf(yield* registryFromFlags(o.plugin))
      const report = ropeReport(o.model, o.length, Option.getOrUndefined(o.ropeScaling), families)
      yield* Console.log(o.json ? JSON.stringify(report, null, 2) : formatRopeReport(report).trimEnd())
      const plot = Option.getOrUndefined(o.plot)
      if (plot !== undefined) {
        // loaded only when asked: vega adds ~100 ms to every start otherwise
        const { writeRopePlot } = yield* Effect.promise(() => import("../../plugins/report/rope-plot.ts"))
        yield* Effect.tryPromise({ try: () => writeRopePlot(plot, report), catch: (e) => inputError("--plot", `cannot write ${plot}: ${e instanceof Error ? e.message : String(e)}`) })
        yield* Console.error(`plot: ${plot}`)
      }
    }),
).pipe(Command.withDescription("Print the effective RoPE table (divisors, n̂, attention scale, chosen set) for an input length"))
