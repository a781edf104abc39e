/**
 * LoRA adapters in PEFT's layout, written beside the base weights or alone, and read back merged:
 *
 *   adapter_config.json        {"peft_type": "LORA", "r", "lora_alpha", "lora_dropout", "target_modules",
 *                               "modules_to_save", "base_model_name_or_path", …}
 *   adapter_model.safetensors  "base_model.model.<module>.lora_A.weight" [r, in] and ".lora_B.weight"
 *                              [out, r]; a module saved whole (LongLoRA's norms, embeddings) under
 *                              "base_model.model.<tensor name>"
 *
 * A folder holding base weights and an adapter is read as the adapted model: `AdaptedWeights` serves each
 * tensor with its adapter merged in (W + scaling·B·A, in float64, rounded once to f32), one tensor at a
 * time, so stages, scoring and exports read it as any other folder. Names are the base model's own (HF
 * parameter names), so nothing here knows a model family.
 */
import { type } from "arktype"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { inputError } from "../common/errors.ts"
import { writeFileAtomic } from "../common/files.ts"
import { type LazyTensor, type RawTensor, readTensor, readTensorBytes, SafetensorsFile, type TensorInfo, type TensorSource, type TensorToWrite, writeSafetensors } from "../common/safetensors.ts"
import { checkJson, readJsonFile } from "../common/validate.ts"
import { mergeLoraHost } from "./lora.ts"

export const ADAPTER_CONFIG = "adapter_config.json"
export const ADAPTER_WEIGHTS = "adapter_model.safetensors"
const PREFIX = "base_model.model."

/** An adapter's settings as PEFT names them. */
export interface PeftLoraConfig {
  readonly rank: number
  readonly alpha: number
  readonly dropout: number
  /** Module names (the last part: "q_proj"). */
  readonly targets: readonly string[]
  /** Modules saved whole, as PEFT's modules_to_save ("embed_tokens", "input_layernorm", "norm", …). */
  readonly modulesToSave: readonly string[]
  /** rsLoRA's scaling alpha/√r instead of alpha/r. */
  readonly rslora?: boolean
  /** The base model (a folder or a hub name), for readers of the adapter alone. */
  readonly base?: string
}

export const loraScaling = (c: Pick<PeftLoraConfig, "rank" | "alpha" | "rslora">): number => (c.rslora === true ? c.alpha / Math.sqrt(c.rank) : c.alpha / c.rank)

/** Writes adapter_config.json and adapter_model.safetensors into `dir`; `tensors` by the base's own names (F32). */
export function writePeftAdapter(dir: string, c: PeftLoraConfig, tensors: readonly TensorToWrite[]): void {
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors.map((t) => ({ ...t, name: PREFIX + t.name })), { format: "pt" })
  const json = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: c.base ?? null,
    r: c.rank,
    lora_alpha: c.alpha,
    lora_dropout: c.dropout,
    target_modules: [...c.targets],
    modules_to_save: c.modulesToSave.length === 0 ? null : [...c.modulesToSave],
    bias: "none",
    fan_in_fan_out: false,
    use_rslora: c.rslora === true,
    use_dora: false,
    init_lora_weights: true,
    inference_mode: true,
    layers_to_transform: null,
    rank_pattern: {},
    alpha_pattern: {},
  }
  writeFileAtomic(join(dir, ADAPTER_CONFIG), `${JSON.stringify(json, null, 2)}\n`)
}

const posInt = type("number.integer > 0").describe("a positive integer")
const emptyObject = type("Record<string, unknown>").narrow((v) => Object.keys(v).length === 0).describe("{} (per-module ranks and alphas are not supported)")

/** What ropeway reads of adapter_config.json: a plain LoRA (no DoRA, biases, per-layer patterns or regex targets). */
const AdapterConfigJson = type({
  peft_type: type("'LORA'").describe('"LORA" (the only adapter type ropeway reads)'),
  r: posInt,
  lora_alpha: type("number > 0").describe("a positive number"),
  "lora_dropout?": "number",
  target_modules: type("string[]").describe("a list of module names (a regular expression is not supported)"),
  "modules_to_save?": "string[] | null",
  "base_model_name_or_path?": "string | null",
  "bias?": type("'none'").describe('"none" (adapter biases are not supported)'),
  "fan_in_fan_out?": type("false").describe("false"),
  "use_dora?": type("false").describe("false (DoRA is not supported)"),
  "use_rslora?": "boolean",
  "layers_to_transform?": type("null").describe("null (every layer)"),
  "rank_pattern?": emptyObject.or("null"),
  "alpha_pattern?": emptyObject.or("null"),
})

/** An adapter read from a folder: its settings and its tensors by the base's names (prefix stripped). */
export interface PeftAdapter {
  readonly dir: string
  readonly config: PeftLoraConfig
  readonly scaling: number
  readonly file: string
  readonly tensors: ReadonlyMap<string, TensorInfo>
}

/** The adapter in `dir`, or undefined when the folder has no adapter_config.json. */
export function readPeftAdapter(dir: string): PeftAdapter | undefined {
  const configFile = join(dir, ADAPTER_CONFIG)
  if (!existsSync(configFile)) return undefined
  const j = checkJson(AdapterConfigJson, readJsonFile(configFile), configFile)
  const file = join(dir, ADAPTER_WEIGHTS)
  if (!existsSync(file)) throw inputError(configFile, `names a LoRA adapter but ${ADAPTER_WEIGHTS} is not beside it`)
  const st = SafetensorsFile.open(file)
  const tensors = new Map<string, TensorInfo>()
  for (const [name, info] of st.tensors) {
    if (!name.startsWith(PREFIX)) throw inputError(file, `tensor "${name}" does not start with "${PREFIX}" (PEFT's layout)`)
    tensors.set(name.slice(PREFIX.length), { ...info, name })
  }
  const config: PeftLoraConfig = {
    rank: j.r, alpha: j.lora_alpha, dropout: j.lora_dropout ?? 0, targets: j.target_modules, modulesToSave: j.modules_to_save ?? [],
    rslora: j.use_rslora === true, ...(typeof j.base_model_name_or_path === "string" ? { base: j.base_model_name_or_path } : {}),
  }
  return { dir, config, scaling: loraScaling(config), file, tensors }
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i])

/**
 * A base model's tensors with an adapter merged in. Construction checks every adapter tensor against the
 * base (its module exists, A [r, in] and B [out, r] fit W [out, in], a saved module has the base's shape),
 * before anything is read. A merged tensor reads as F32 (it no longer sits on the base's 16-bit grid).
 */
export class AdaptedWeights implements TensorSource {
  readonly source: string
  readonly tensors: ReadonlyMap<string, TensorInfo>
  /** Base weight name → its adapter's A and B. */
  private readonly pairs = new Map<string, { readonly a: TensorInfo; readonly b: TensorInfo }>()
  private readonly saved = new Map<string, TensorInfo>()

  constructor(readonly base: TensorSource, readonly adapter: PeftAdapter) {
    this.source = base.source
    const r = adapter.config.rank
    const seen = new Set<string>()
    for (const [name, info] of adapter.tensors) {
      const m = /^(.*)\.lora_([AB])\.weight$/.exec(name)
      if (m === null) {
        const b = base.get(name)
        if (b === undefined) throw inputError(adapter.file, `tensor "${info.name}" names no tensor of the base model`)
        if (!sameShape(b.shape, info.shape)) throw inputError(adapter.file, `tensor "${info.name}" has shape [${info.shape.join(", ")}]; the base's is [${b.shape.join(", ")}]`)
        this.saved.set(name, info)
        continue
      }
      const module = m[1]!
      if (seen.has(module)) continue
      seen.add(module)
      const weight = `${module}.weight`
      const w = base.get(weight)
      if (w === undefined || w.shape.length !== 2) throw inputError(adapter.file, `LoRA tensor "${info.name}" adapts "${module}", which is not a linear layer of the base model`)
      const a = adapter.tensors.get(`${module}.lora_A.weight`)
      const b = adapter.tensors.get(`${module}.lora_B.weight`)
      if (a === undefined || b === undefined) throw inputError(adapter.file, `"${module}" has lora_${a === undefined ? "A" : "B"} missing`)
      const [out, inF] = w.shape as [number, number]
      if (!sameShape(a.shape, [r, inF])) throw inputError(adapter.file, `tensor "${a.name}" has shape [${a.shape.join(", ")}]; expected [${r}, ${inF}] (r × in_features of ${weight})`)
      if (!sameShape(b.shape, [out, r])) throw inputError(adapter.file, `tensor "${b.name}" has shape [${b.shape.join(", ")}]; expected [${out}, ${r}] (out_features of ${weight} × r)`)
      this.pairs.set(weight, { a, b })
    }
    const tensors = new Map(base.tensors)
    for (const name of this.pairs.keys()) tensors.set(name, { ...base.get(name)!, dtype: "F32" })
    for (const [name, info] of this.saved) tensors.set(name, { ...info, name })
    this.tensors = tensors
  }

  get(name: string): TensorInfo | undefined {
    return this.tensors.get(name)
  }

  /** An adapted tensor is F32 (merged, or saved whole by the adapter); the others as the base stores them. */
  readRaw(name: string): RawTensor {
    return this.pairs.has(name) || this.saved.has(name) ? { dtype: "F32", data: this.read(name) } : this.base.readRaw(name)
  }

  read(name: string): Float32Array {
    const saved = this.saved.get(name)
    if (saved !== undefined) return readTensor(saved)
    const w = this.base.read(name)
    const pair = this.pairs.get(name)
    if (pair === undefined) return w
    const [out, inF] = this.base.get(name)!.shape as [number, number]
    return mergeLoraHost(w, readTensor(pair.a), readTensor(pair.b), out, inF, this.adapter.config.rank, this.adapter.scaling)
  }

  /** How many base tensors the adapter changes. */
  get adapted(): number {
    return this.pairs.size + this.saved.size
  }
}

const readInfo = readTensor

/**
 * Every tensor of an adapted model for writing it merged: a tensor the adapter changes as F32 (W + s·B·A,
 * or the adapter's saved copy), the others as their file stores them, byte for byte. Lazy: one tensor in
 * memory at a time.
 */
export function mergedTensors(w: AdaptedWeights): LazyTensor[] {
  return [...w.base.tensors.values()].map((base): LazyTensor => {
    const info = w.get(base.name)!
    const changed = info !== base
    const dtype = changed ? "F32" : (base.dtype as "F32" | "F16" | "BF16")
    return { name: base.name, dtype, shape: base.shape, bytes: () => (changed ? new Uint8Array(w.read(base.name).buffer) : readTensorBytes(base)) }
  })
}
