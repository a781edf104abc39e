/**
 * The RoPE a fine-tune trains at, and the config.json its output carries: the scaling it was trained with
 * (the given object, or the factor set as `longrope-research` by default or HF `longrope`), with
 * max_position_embeddings raised to what that scaling covers.
 */
import { inputError } from "../../common/errors.ts"
import { ropeCoverage } from "./coverage.ts"
import { factorSetToHfLongrope, factorSetToScaling, parseFactorSetFile, ropeSpecFromConfig } from "./formats.ts"
import type { RopeSpec } from "./types.ts"

type Config = Record<string, unknown>

/** The scaling to train at, what goes into the output config.json, and where it came from. */
export interface RopeChoice {
  readonly scaling: Config | undefined
  readonly written: Config | undefined
  /** Where it came from, for messages: a param name or a file path. */
  readonly source: string
  /** The same without paths, for artifacts (their bytes must not depend on where the store is). */
  readonly recorded: string
}

/** A fine-tune's RoPE params: an HF rope_scaling to train at, and how a factor set is written. */
export interface RopeParams {
  readonly ropeScaling?: Readonly<Record<string, unknown>>
  readonly scalingFormat?: "longrope-research" | "longrope"
}

/**
 * The table to train at, first found wins: `ropeScaling` (replacing the model's), the `factors` input (a
 * factor-set file, the search's output), the model's own config.json.
 */
export function chooseRope(p: RopeParams, config: Config, configFile: string, factorsPath: string | undefined, readText: (path: string) => string): RopeChoice {
  if (p.ropeScaling !== undefined) {
    if (p.scalingFormat !== undefined) throw inputError("finetune.scalingFormat", "applies to a factor set (the `factors` input), not to ropeScaling")
    // `{}` is plain RoPE: trained without scaling, so the output must not keep the input's.
    const s = Object.keys(p.ropeScaling).length === 0 ? undefined : { ...p.ropeScaling }
    return { scaling: s, written: s ?? { rope_type: "default" }, source: "finetune.ropeScaling", recorded: "finetune.ropeScaling" }
  }
  if (factorsPath !== undefined) {
    const file = parseFactorSetFile(readText(factorsPath), factorsPath)
    const spec = ropeSpecFromConfig(config, configFile)
    if (file.model.rotary_dim !== spec.rotaryDim || file.model.base !== spec.base) {
      throw inputError(factorsPath, `factor set is for rotary_dim ${file.model.rotary_dim}, base ${file.model.base}; the model has ${spec.rotaryDim}, ${spec.base}`)
    }
    const scaling = factorSetToScaling(file) as Config
    const written = p.scalingFormat === "longrope" ? (factorSetToHfLongrope(file, factorsPath) as Config) : scaling
    const run = file.provenance.run_id
    return { scaling, written, source: factorsPath, recorded: `the factors input${run === null || run === undefined ? "" : ` (search run ${run})`}` }
  }
  if (p.scalingFormat !== undefined) throw inputError("finetune.scalingFormat", "applies to a factor set: wire a `factors` input (stage finetune-factors)")
  const spec = ropeSpecFromConfig(config, configFile)
  return { scaling: spec.scaling === undefined ? undefined : { ...spec.scaling }, written: undefined, source: configFile, recorded: "the model's config.json" }
}

/**
 * The output config.json: the input's with the training scaling written (when it changed) and
 * max_position_embeddings raised to what the table covers. Where that raise would make a method read a
 * different original length (yarn etc. fall back to max_position_embeddings), the original goes into the
 * scaling explicitly.
 */
export function outputConfig(config: Config, choice: RopeChoice, spec: RopeSpec, seqLen: number): Config {
  if (choice.written === undefined) return config
  const oldMax = spec.maxPositions
  const original = spec.originalMaxPositions ?? (typeof config["original_max_position_embeddings"] === "number" ? (config["original_max_position_embeddings"] as number) : oldMax)
  let scaling = { ...choice.written }
  const type = scaling["rope_type"] ?? scaling["type"]
  // What the training table covers (for a factor set written as HF longrope too: its long set's max_length).
  const newMax = Math.max(oldMax, seqLen, ropeCoverage(spec).length)
  if (type !== "default" && scaling["original_max_position_embeddings"] === undefined && config["original_max_position_embeddings"] === undefined) {
    scaling = { ...scaling, original_max_position_embeddings: original }
  }
  const out: Config = { ...config }
  delete out["rope_scaling"]
  delete out["rope_parameters"]
  out["rope_scaling"] = type === "default" ? null : scaling
  out["max_position_embeddings"] = newMax
  return out
}
