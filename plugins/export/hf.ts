/**
 * Hugging Face folder exports: the source folder's files hard-linked (copied where links fail: another
 * file system) with config.json rewritten to carry a RoPE setting. Weights are never rewritten.
 */
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs"
import { join } from "node:path"
import { inputError } from "../../common/errors.ts"
import { type FactorSetFile, factorSetToHfLongrope, factorSetToScaling, withScaling } from "../rope/formats.ts"
import { writeFileAtomic } from "../../common/files.ts"

type Json = Record<string, unknown>

/** The config.json of a model folder as a plain object. */
export function readConfigJson(dir: string): Json {
  const file = join(dir, "config.json")
  if (!existsSync(file)) throw inputError(file, "not found (a Hugging Face model folder needs config.json)")
  try {
    const v: unknown = JSON.parse(readFileSync(file, "utf8"))
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("expected a JSON object")
    return v as Json
  } catch (e) {
    throw inputError(file, `malformed JSON (${(e as Error).message})`)
  }
}

/** A RoPE setting to write: the rope_scaling object and the context fields that go with it. */
export interface HfRope {
  /** undefined: plain RoPE. */
  readonly scaling: Json | undefined
  readonly originalMaxPositions?: number
  readonly maxPositions?: number
}

/** `config` with `rope` applied: rope_scaling replaced, original/max_position_embeddings set when given. */
export function configWithRope(config: Json, rope: HfRope): Json {
  const out = withScaling(config, rope.scaling)
  if (rope.originalMaxPositions !== undefined) out["original_max_position_embeddings"] = rope.originalMaxPositions
  if (rope.maxPositions !== undefined) out["max_position_embeddings"] = rope.maxPositions
  return out
}

/**
 * The RoPE settings a factor-set file exports to. Two sets or fewer: HF's `longrope` pair. More: the exact
 * `longrope-research` table (ropeway reads it; transformers does not) and, separately, an HF pair: short =
 * the set serving L0, long = the last set (factorSetToHfLongrope), with the long set's attention factor.
 */
export function ropeFromFactorSet(f: FactorSetFile, sourceConfig: Json, where: string): { exact: HfRope; hfPair: HfRope | undefined; pairNote: string } {
  const L0 = f.model.original_max_position_embeddings
  const last = f.sets[f.sets.length - 1]!
  const srcMax = typeof sourceConfig["max_position_embeddings"] === "number" ? (sourceConfig["max_position_embeddings"] as number) : 0
  const maxPositions = Math.max(srcMax, last.max_length)
  const pair: HfRope = { scaling: factorSetToHfLongrope(f, where), originalMaxPositions: L0, maxPositions }
  const shortIdx = f.sets.findIndex((s) => s.max_length >= L0)
  const shortWhat = shortIdx === -1 || shortIdx === f.sets.length - 1 ? "identity (no set serves L0 but the last)" : `sets[${shortIdx}] (max_length ${f.sets[shortIdx]!.max_length})`
  const pairNote = `HF longrope pair: short_factor = ${shortWhat}, long_factor = sets[${f.sets.length - 1}] (max_length ${last.max_length}); attention_factor from the long set, applied by HF to both`
  if (f.sets.length <= 2) return { exact: pair, hfPair: undefined, pairNote }
  return { exact: { scaling: factorSetToScaling(f), originalMaxPositions: L0, maxPositions }, hfPair: pair, pairNote }
}

/** Links (or copies) every top-level file of `src` into a fresh `dst`, then writes config.json. */
export function writeHfFolder(src: string, dst: string, config: Json): string[] {
  rmSync(dst, { recursive: true, force: true })
  mkdirSync(dst, { recursive: true })
  const files: string[] = []
  for (const name of readdirSync(src)) {
    const from = join(src, name)
    if (name === "config.json" || !statSync(from).isFile()) continue
    try {
      linkSync(from, join(dst, name))
    } catch {
      copyFileSync(from, join(dst, name))
    }
    files.push(name)
  }
  writeFileAtomic(join(dst, "config.json"), `${JSON.stringify(config, null, 2)}\n`)
  return ["config.json", ...files]
}
