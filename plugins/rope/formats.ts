/**
 * Formats: HF config.json RoPE fields (rope_scaling and the newer rope_parameters, `type` or `rope_type`,
 * old name `su`), LongRoPE factor CSVs, and ropeway's own factor-set file (JSON, with provenance).
 */
import { type } from "arktype"
import { inputError } from "../../common/errors.ts"
import { checkJson } from "../../common/validate.ts"
import { mscale } from "./factors.ts"
import { readLongrope } from "./longrope.ts"
import { factorVector, show } from "./params.ts"
import type { RopeSpec } from "./types.ts"

type Json = Record<string, unknown>
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v)

// ---- config.json ---------------------------------------------------------------------------------

/**
 * The rope_scaling-like object of a config and the key it came from. As in transformers, a non-empty
 * `rope_scaling` wins over `rope_parameters`; `type` is accepted for `rope_type`.
 */
export function scalingOf(config: Json, where = "config.json"): { scaling: Json | undefined; key: string } {
  for (const key of ["rope_scaling", "rope_parameters"] as const) {
    const v = config[key]
    if (v === undefined || v === null) continue
    if (!isObject(v)) throw inputError(`${where}: ${key}`, `expected an object, got ${show(v)}`)
    if (Object.keys(v).length === 0) continue
    const typed = v["rope_type"] ?? v["type"]
    if (typed === undefined && Object.values(v).every(isObject)) {
      throw inputError(`${where}: ${key}`, "expected one set of RoPE parameters; per-layer-type rope_parameters are not supported")
    }
    return { scaling: v, key }
  }
  return { scaling: undefined, key: "rope_scaling" }
}

function posInt(config: Json, field: string, where: string, fallback?: number): number {
  const v = config[field] ?? fallback
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw inputError(`${where}: ${field}`, `expected an integer > 0, got ${show(v)}`)
  }
  return v
}

/**
 * A model's RoPE settings from its config.json object, with HF's precedence: rope_theta inside
 * rope_parameters over the top level (default 10000); top-level partial_rotary_factor over the one inside;
 * head_dim (when set) else hidden_size / num_attention_heads; rotary dim = floor(head_dim × partial factor);
 * original_max_position_embeddings at the top level over the one inside rope_scaling.
 * `override` replaces the config's rope_scaling (e.g. `--rope-scaling JSON`).
 */
export function ropeSpecFromConfig(config: unknown, where = "config.json", override?: { scaling: Json; key: string }): RopeSpec {
  if (!isObject(config)) throw inputError(where, `expected a JSON object, got ${show(config)}`)
  const found = override ?? scalingOf(config, where)
  const inner = found.scaling ?? {}
  const num = (v: unknown, field: string, ok: (x: number) => boolean, expected: string): number | undefined => {
    if (v === undefined || v === null) return undefined
    if (typeof v !== "number" || !Number.isFinite(v) || !ok(v)) throw inputError(`${where}: ${field}`, `expected ${expected}, got ${show(v)}`)
    return v
  }
  const base =
    num(inner["rope_theta"], `${found.key}.rope_theta`, (x) => x > 1, "a number > 1") ??
    num(config["rope_theta"], "rope_theta", (x) => x > 1, "a number > 1") ??
    10000
  const partial =
    num(config["partial_rotary_factor"], "partial_rotary_factor", (x) => x > 0 && x <= 1, "a number in (0, 1]") ??
    num(inner["partial_rotary_factor"], `${found.key}.partial_rotary_factor`, (x) => x > 0 && x <= 1, "a number in (0, 1]") ??
    1
  const headDim =
    config["head_dim"] !== undefined && config["head_dim"] !== null
      ? posInt(config, "head_dim", where)
      : Math.floor(posInt(config, "hidden_size", where) / posInt(config, "num_attention_heads", where))
  const rotaryDim = Math.floor(headDim * partial)
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) {
    throw inputError(`${where}: partial_rotary_factor`, `expected head_dim × partial_rotary_factor to be an even number ≥ 2, got ${rotaryDim}`)
  }
  const originalTop = config["original_max_position_embeddings"]
  const originalMaxPositions =
    originalTop !== undefined && originalTop !== null
      ? posInt(config, "original_max_position_embeddings", where)
      : isObject(found.scaling) && found.scaling["original_max_position_embeddings"] !== undefined
        ? posInt(found.scaling, "original_max_position_embeddings", `${where}: ${found.key}`)
        : undefined
  return {
    headDim,
    rotaryDim,
    base,
    maxPositions: posInt(config, "max_position_embeddings", where),
    originalMaxPositions,
    numLayers: posInt(config, "num_hidden_layers", where),
    scaling: found.scaling,
    scalingKey: found.key,
  }
}

/** Parses `--rope-scaling JSON` (an object, or `null`/`{}` for plain RoPE). */
export function parseScalingJson(text: string, where = "--rope-scaling"): Json | undefined {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw inputError(where, `expected a JSON object, got invalid JSON (${(e as Error).message})`)
  }
  if (v === null) return undefined
  if (!isObject(v)) throw inputError(where, `expected a JSON object, got ${show(v)}`)
  return Object.keys(v).length === 0 ? undefined : v
}

export interface WriteScalingOptions {
  /** "rope_scaling" (transformers ≤ 4.x and most runtimes) or "rope_parameters" (transformers 5). */
  readonly key?: "rope_scaling" | "rope_parameters"
  /** The type field's name: "rope_type" (default), "type" (older Phi-3 readers), or both. */
  readonly typeKey?: "rope_type" | "type" | "both"
}

/**
 * A copy of `config` with `scaling` written under `key` (the other key removed). rope_parameters also
 * carries rope_theta (and partial_rotary_factor when the config has one), as transformers 5 saves it.
 */
export function withScaling(config: Json, scaling: Json | undefined, opts: WriteScalingOptions = {}): Json {
  const key = opts.key ?? "rope_scaling"
  const out: Json = { ...config }
  delete out["rope_scaling"]
  delete out["rope_parameters"]
  if (scaling === undefined) {
    if (key === "rope_parameters") out[key] = { rope_type: "default", rope_theta: config["rope_theta"] ?? 10000 }
    return out
  }
  const { type: t1, rope_type: t2, ...rest } = scaling
  const name = t2 ?? t1 ?? "default"
  const typeKey = opts.typeKey ?? "rope_type"
  const typed: Json = {}
  if (typeKey === "type" || typeKey === "both") typed["type"] = name
  if (typeKey === "rope_type" || typeKey === "both") typed["rope_type"] = name
  const obj: Json = { ...typed, ...rest }
  if (key === "rope_parameters") {
    obj["rope_theta"] ??= config["rope_theta"] ?? 10000
    if (config["partial_rotary_factor"] !== undefined) obj["partial_rotary_factor"] ??= config["partial_rotary_factor"]
  }
  out[key] = obj
  return out
}

/** An HF `longrope` rope_scaling object (Phi-3 layout). */
export function hfLongropeScaling(p: {
  readonly short: ArrayLike<number>
  readonly long: ArrayLike<number>
  readonly originalLength?: number
  readonly factor?: number
  readonly attentionFactor?: number
  readonly shortMscale?: number
  readonly longMscale?: number
}): Json {
  const out: Json = { rope_type: "longrope", short_factor: Array.from(p.short), long_factor: Array.from(p.long) }
  if (p.originalLength !== undefined) out["original_max_position_embeddings"] = p.originalLength
  if (p.factor !== undefined) out["factor"] = p.factor
  if (p.attentionFactor !== undefined) out["attention_factor"] = p.attentionFactor
  if (p.shortMscale !== undefined) out["short_mscale"] = p.shortMscale
  if (p.longMscale !== undefined) out["long_mscale"] = p.longMscale
  return out
}

// ---- LongRoPE factor CSV -------------------------------------------------------------------------

/**
 * Reads a LongRoPE factor CSV: one value a line (numpy savetxt of a vector), one comma-separated row, or a
 * layers × d/2 matrix (rows of comma- or space-separated values; space padding allowed). Blank lines and
 * `#` comments are skipped. Returns a vector, or one row per layer. Every value must be a number > 0.
 * With `length`, each vector/row must have exactly that many values (rotary_dim/2).
 */
export function parseFactorCsv(text: string, where = "factors.csv", length?: number): Float64Array | Float64Array[] {
  const rows: number[][] = []
  const lines = text.split(/\r?\n/)
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.replace(/#.*/, "").trim()
    if (line === "") continue
    const cells = line.includes(",") ? line.split(",").map((c) => c.trim()).filter((c, i, a) => c !== "" || i < a.length - 1) : line.split(/\s+/)
    const row = cells.map((c, i) => {
      const x = c === "" ? Number.NaN : Number(c)
      if (!Number.isFinite(x) || !(x > 0)) throw inputError(`${where}:${n + 1}`, `value ${i + 1}: expected a number > 0, got ${show(c)}`)
      return x
    })
    rows.push(row)
  }
  if (rows.length === 0) throw inputError(where, "expected factors (one per line, one comma-separated row, or layers × d/2), got an empty file")
  const vector = rows.every((r) => r.length === 1) ? rows.map((r) => r[0]!) : rows.length === 1 ? rows[0]! : undefined
  if (vector !== undefined) {
    if (length !== undefined && vector.length !== length) throw inputError(where, `expected ${length} factors (rotary_dim/2), got ${vector.length}`)
    return Float64Array.from(vector)
  }
  const width = length ?? rows[0]!.length
  rows.forEach((r, i) => {
    if (r.length !== width) throw inputError(`${where}:row ${i + 1}`, `expected ${width} factors like the ${length === undefined ? "first row" : "model's rotary_dim/2"}, got ${r.length}`)
  })
  return rows.map((r) => Float64Array.from(r))
}

/**
 * Writes factors as LongRoPE's loader reads them: a vector one value a line (like numpy savetxt) or, with
 * layout "row", one comma-separated row; a matrix as comma-separated rows. Values keep full float64 precision.
 */
export function formatFactorCsv(factors: ArrayLike<number> | readonly ArrayLike<number>[], layout: "lines" | "row" = "lines"): string {
  const row = (r: ArrayLike<number>) => Array.from(r, (x) => String(x)).join(",")
  if (isMatrix(factors)) return factors.map(row).join("\n") + "\n"
  return layout === "row" ? row(factors) + "\n" : Array.from(factors, (x) => String(x)).join("\n") + "\n"
}

const isMatrix = (f: ArrayLike<number> | readonly ArrayLike<number>[]): f is readonly ArrayLike<number>[] =>
  f.length > 0 && typeof (f as ArrayLike<unknown>)[0] === "object"

/** A matrix whose rows are all equal collapses to one vector (every published factor file is like that). */
export function collapseRows(f: Float64Array | readonly Float64Array[]): Float64Array | readonly Float64Array[] {
  if (f instanceof Float64Array || f.length === 0) return f
  const first = f[0]!
  return f.every((r) => r.length === first.length && r.every((x, i) => x === first[i])) ? first : f
}

// ---- ropeway factor-set file ---------------------------------------------------------------------

const policy = "'su' | 'yarn' | number > 0"
const FactorSetEntry = type({
  max_length: "number.integer > 0",
  // Positivity and length are checked after, with errors that name the index.
  factors: "number[] | number[][]",
  "scale?": "number > 0",
  "mscale?": policy,
  "start_tokens?": "number.integer >= 0",
})

/** ropeway's factor-set file: the sets a model carries, chosen by length, and where they came from. */
export const FactorSetFile = type({
  format: "'ropeway-factor-set'",
  version: "1",
  model: {
    rotary_dim: "number.integer > 0",
    base: "number > 1",
    original_max_position_embeddings: "number.integer > 0",
    "num_hidden_layers?": "number.integer > 0",
  },
  "mscale?": policy,
  "start_tokens?": "number.integer >= 0",
  "critical_dim?": "number.integer >= 0 | 'auto'",
  "dynamic?": "boolean",
  sets: FactorSetEntry.array().atLeastLength(1),
  provenance: {
    /** What produced the factors: "search", "yarn-init", "hf-import", a method name... */
    method: "string",
    /** The search run that produced them, or null. */
    run_id: "string | null",
    /** The lengths the factors were searched/evaluated at. */
    lengths: "number.integer > 0 [] ",
    /** The scale s = L'/L0 they target. */
    scale: "number > 0",
    /**
     * ISO 8601 time of creation, in files from before ropeway made artifacts reproducible (the same
     * inputs give the same bytes): the run manifest records when a step ran.
     */
    "created?": "string",
    "source?": "string",
    "notes?": "string",
  },
})
export type FactorSetFile = typeof FactorSetFile.infer

/** True when arrays or objects nest more than `levels` deep (looks no deeper than that). */
const nestedDeeperThan = (v: unknown, levels: number): boolean =>
  typeof v === "object" && v !== null && (levels === 0 || Object.values(v).some((x) => nestedDeeperThan(x, levels - 1)))

/** Parses and validates a factor-set file; errors name the file and the path in it. */
export function parseFactorSetFile(text: string, where = "rope.json"): FactorSetFile {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw inputError(where, `expected JSON, got a parse error (${(e as Error).message})`)
  }
  // arktype's messages quote the offending value at every level: a deeply nested one would cost gigabytes
  if (nestedDeeperThan(v, 8)) throw inputError(where, "JSON nested more than 8 levels deep; a factor-set file has at most 5")
  const out = checkJson(FactorSetFile, v, where)
  const half = out.model.rotary_dim / 2
  out.sets.forEach((s, k) => {
    const rows = Array.isArray(s.factors[0]) ? (s.factors as number[][]) : [s.factors as number[]]
    rows.forEach((r, l) => factorVector(r, half, `${where}: sets[${k}].factors${rows.length > 1 ? `[${l}]` : ""}`))
    if (k > 0 && s.max_length <= out.sets[k - 1]!.max_length) {
      throw inputError(`${where}: sets[${k}].max_length`, `expected an integer > ${out.sets[k - 1]!.max_length} (sets ordered by max_length), got ${s.max_length}`)
    }
  })
  return out
}

export const formatFactorSetFile = (f: FactorSetFile): string => JSON.stringify(f, null, 2) + "\n"

/**
 * A factor-set file from an HF `longrope` model: short set up to L0, long set up to max_position_embeddings,
 * both with HF's attention factor as a fixed mscale (HF applies one value to both sets; per-set
 * short_mscale/long_mscale win where present, as in vLLM).
 */
export function factorSetFromHfLongrope(
  spec: RopeSpec,
  provenance: Omit<FactorSetFile["provenance"], "method"> & { method?: string },
): FactorSetFile {
  const lp = readLongrope(spec)
  const file: FactorSetFile = {
    format: "ropeway-factor-set",
    version: 1,
    model: { rotary_dim: spec.rotaryDim, base: spec.base, original_max_position_embeddings: lp.originalLength, num_hidden_layers: spec.numLayers },
    sets: [
      { max_length: lp.originalLength, factors: Array.from(lp.short), mscale: lp.shortMscale ?? lp.attentionFactor },
      { max_length: Math.max(spec.maxPositions, lp.originalLength + 1), factors: Array.from(lp.long), mscale: lp.longMscale ?? lp.attentionFactor },
    ],
    provenance: { ...provenance, method: provenance.method ?? "hf-import" },
  }
  return file
}

/** The factor-set file as a `longrope-research` rope_scaling object (usable as --rope-scaling). */
export function factorSetToScaling(f: FactorSetFile): Json {
  const out: Json = { rope_type: "longrope-research", original_max_position_embeddings: f.model.original_max_position_embeddings }
  if (f.mscale !== undefined) out["mscale"] = f.mscale
  if (f.start_tokens !== undefined) out["start_tokens"] = f.start_tokens
  if (f.critical_dim !== undefined) out["critical_dim"] = f.critical_dim
  if (f.dynamic !== undefined) out["dynamic"] = f.dynamic
  out["sets"] = f.sets.map((s) => ({ ...s }))
  return out
}

/**
 * The HF two-set (`longrope`) export of a factor-set file: short = the set serving length L0 (identity
 * when none does), long = the last set. Per-layer factors, start tokens and non-"su" policies have no HF
 * equivalent, so they are refused rather than silently dropped. attention_factor is written explicitly:
 * the long set's m under its policy.
 */
export function factorSetToHfLongrope(f: FactorSetFile, where = "rope.json"): Json {
  const L0 = f.model.original_max_position_embeddings
  const vec = (s: (typeof f.sets)[number], k: number): number[] => {
    if (Array.isArray(s.factors[0])) {
      const rows = s.factors as number[][]
      if (!rows.every((r) => r.every((x, i) => x === rows[0]![i]))) {
        throw inputError(`${where}: sets[${k}].factors`, "expected one vector for the HF longrope export, got per-layer factors")
      }
      return rows[0]!
    }
    return s.factors as number[]
  }
  f.sets.forEach((s, k) => {
    if ((s.start_tokens ?? f.start_tokens ?? 0) !== 0) throw inputError(`${where}: sets[${k}].start_tokens`, "expected 0 for the HF longrope export (HF has no start tokens)")
  })
  const shortIdx = f.sets.findIndex((s) => s.max_length >= L0)
  const lastIdx = f.sets.length - 1
  const last = f.sets[lastIdx]!
  const short = shortIdx === -1 || shortIdx === lastIdx ? new Array<number>(f.model.rotary_dim / 2).fill(1) : vec(f.sets[shortIdx]!, shortIdx)
  // Explicit, so HF needs no max_position_embeddings to agree; HF applies it to the short set too.
  const attentionFactor = mscale(last.mscale ?? f.mscale ?? "su", last.scale ?? last.max_length / L0, L0)
  return hfLongropeScaling({ short, long: vec(last, lastIdx), originalLength: L0, attentionFactor })
}
