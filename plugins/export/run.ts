/**
 * Exports a model folder (optionally with a factor-set file) to the formats other tools read, and checks
 * each one after writing:
 *
 *   hf/            config.json with the RoPE setting (HF `longrope` pair; with more than two sets the exact
 *                  `longrope-research` table, plus hf-longrope/ with the HF pair), weights hard-linked
 *   csv/           LongRoPE factor CSVs, one per set ({max_length/1024}k.csv)
 *   gguf/          model-{f32|f16}.gguf for llama.cpp (from the HF pair)
 *   peft/          a LoRA-adapted source's adapter alone (adapter_config.json + adapter_model.safetensors)
 *   checks.json    what was reloaded and scored, against what, and the max |Δ log p|
 *
 * A source carrying a LoRA adapter (finetune with `lora`) goes out merged in hf/ and the GGUF: its adapted
 * tensors written in F32 (W + alpha/r·B·A), the others as stored.
 *
 * Checks: HF folders are reloaded with loadLlama and scored against the source weights under the same
 * rope_scaling (tolerance 1e-4). CSVs are re-read with the LongRoPE-compatible parser (exact). GGUF is
 * decoded (tensors compared with the source, q/k un-permuted), its RoPE metadata turned into the table
 * llama.cpp will use at each check length (plugins/models/llama/gguf-export.ts llamaCppRope) and compared
 * with ropeway's, and, where node-llama-cpp is installed, scored by llama.cpp against ropeway with that
 * table (tolerance 1e-3, f32 files).
 */
import { mkdirSync, readFileSync, rmSync } from "node:fs"
import { availableParallelism } from "node:os"
import { join, relative, resolve } from "node:path"
import { defaultInvFreq, type RopeTable } from "../../kernels/rope-table.ts"
import type { GpuRuntime } from "../../kernels/runtime.ts"
import { inputError } from "../../common/errors.ts"
import { decodeGguf, writeGguf } from "../../common/gguf.ts"
import { llamaCppRope, llamaToGguf, readHostLlama, unpermuteRotaryRows } from "../models/llama/gguf-export.ts"
import { inspectLlama, loadLlama, type LlamaModel } from "../models/llama/model.ts"
import { type FactorSetFile, factorSetFromHfLongrope, factorSetToScaling, parseFactorSetFile, ropeSpecFromConfig } from "../rope/formats.ts"
import { writeFileAtomic } from "../../common/files.ts"
import { writeFactorCsvs, type CsvCheck } from "./csv.ts"
import { configWithRope, type HfRope, readConfigJson, ropeFromFactorSet, writeHfFolder, writePeftFolder } from "./hf.ts"
import { Checkpoint } from "../../common/safetensors.ts"
import { AdaptedWeights, readPeftAdapter } from "../../training/peft.ts"
import { llamaCppAvailable, llamaCppContext, llamaCppLogprobs } from "./llamacpp.ts"

export const EXPORT_FORMATS = ["hf", "csv", "gguf", "peft"] as const
/** What `formats` defaults to. */
export const DEFAULT_FORMATS = ["hf", "csv", "gguf"] as const
export type ExportFormat = (typeof EXPORT_FORMATS)[number]

export const HF_TOLERANCE = 1e-4
/**
 * llama.cpp against ropeway: |Δ logprob| ≤ 1e-3 · max(1, |logprob|). Both compute in f32 with different
 * summation orders, so the rounding grows with the logits: the check's random tokens have logprobs near
 * −30 under a trained model (the tiny model after fine-tuning: Δ 2.6e-3 at 4096 tokens), ~−5 under a
 * random one (test/export: within 1e-3 absolute).
 */
export const GGUF_TOLERANCE = 1e-3

export interface ExportOptions {
  /** The source Hugging Face folder. */
  readonly model: string
  /** A ropeway factor-set file; absent: the model's own rope_scaling is exported. */
  readonly factors?: string
  readonly out: string
  readonly formats?: readonly ExportFormat[]
  readonly dtype?: "f32" | "f16"
  /** Score the GGUF with llama.cpp when node-llama-cpp is installed (default true). */
  readonly llamacpp?: boolean
  /** llama.cpp CPU threads for the GGUF check (default min(8, available cores)). */
  readonly threads?: number
  /** Token counts scored by the checks (default: one at or below L0 and one past it, where the model extends). */
  readonly checkLengths?: readonly number[]
  /**
   * How checks.json names the sources (default: their absolute paths). A workflow step names its inputs
   * instead, so its artifact's bytes do not depend on where the store is.
   */
  readonly sourceNames?: { readonly model: string; readonly factors?: string }
  readonly log?: (line: string) => void
}

export interface ScoreCheck {
  readonly length: number
  /** What the exported artifact was compared with. */
  readonly against: string
  readonly maxAbsDiff: number
  /** max |Δ| / max(1, |logprob|): what GGUF_TOLERANCE bounds (GGUF checks only). */
  readonly maxScaledDiff?: number
  readonly tolerance: number | null
  readonly ok: boolean
  readonly note?: string
}

export interface HfCheck {
  readonly format: "hf"
  readonly path: string
  readonly ropeType: string
  readonly reloaded: "loadLlama"
  readonly scored: readonly ScoreCheck[]
  /** Against the factor set's own (longrope-research) semantics, for information: HF's pair may differ. */
  readonly vsFactorSet?: readonly ScoreCheck[]
  readonly ok: boolean
}

export interface GgufRopeCheck {
  readonly length: number
  readonly contextSize: number
  readonly llamaCppFactors: string
  /** The input length whose ropeway table llama.cpp's was compared with: `length`, or L0+1 where llama.cpp uses the long set for a short input. */
  readonly comparedWithLength: number
  readonly ropewayChoice: string
  readonly invFreqMaxRelDiff: number
  readonly attentionScaleDiff: number
  readonly matchesHf: boolean
}

export interface GgufCheck {
  readonly format: "gguf"
  readonly path: string
  readonly dtype: "f32" | "f16"
  readonly ropeForm: string
  readonly notes: readonly string[]
  readonly decoded: { readonly tensors: number; readonly maxAbsDiff: number; readonly qkUnpermutedMaxAbsDiff: number }
  readonly rope: readonly GgufRopeCheck[]
  readonly llamacpp: readonly ScoreCheck[] | { readonly skipped: string }
  readonly ok: boolean
}

export interface PeftCheck {
  readonly format: "peft"
  readonly path: string
  /** Adapter tensors re-read from the written folder and fitted against the base weights (shapes). */
  readonly tensors: number
  readonly ok: boolean
}

export interface CsvChecks {
  readonly format: "csv"
  readonly files: readonly CsvCheck[]
  readonly ok: boolean
}

export interface ExportChecks {
  readonly source: { readonly model: string; readonly factors: string | null }
  readonly formats: readonly ExportFormat[]
  readonly checks: readonly (HfCheck | CsvChecks | GgufCheck | PeftCheck | { readonly format: ExportFormat; readonly skipped: string })[]
  readonly notes: readonly string[]
  readonly ok: boolean
}

/** Deterministic token ids below `vocab`. */
export function checkTokens(n: number, vocab: number, seed = 12345): number[] {
  let s = seed >>> 0
  return Array.from({ length: n }, () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 16) % vocab)
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  if (a.length !== b.length) return Infinity
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!))
  return Number.isNaN(m) ? Infinity : m
}

/** max |a − b| / max(1, |b|). */
const maxScaled = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  if (a.length !== b.length) return Infinity
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)))
  return Number.isNaN(m) ? Infinity : m
}

const typeOf = (s: Record<string, unknown> | undefined): string => String(s?.["rope_type"] ?? s?.["type"] ?? "default")

/** The factor-set file a model's own longrope / longrope-research scaling amounts to (for CSVs), if any. */
function factorSetOfModel(config: Record<string, unknown>, where: string): FactorSetFile | undefined {
  const spec = ropeSpecFromConfig(config, where)
  const type = typeOf(spec.scaling)
  const provenance = { run_id: null, lengths: [spec.maxPositions], scale: 1, source: where }
  if (type === "longrope" || type === "su") return factorSetFromHfLongrope(spec, provenance)
  if (type === "longrope-research") {
    const s = spec.scaling!
    const file = {
      format: "ropeway-factor-set", version: 1,
      model: { rotary_dim: spec.rotaryDim, base: spec.base, original_max_position_embeddings: spec.originalMaxPositions ?? s["original_max_position_embeddings"] },
      ...(s["mscale"] === undefined ? {} : { mscale: s["mscale"] }),
      ...(s["start_tokens"] === undefined ? {} : { start_tokens: s["start_tokens"] }),
      sets: s["sets"],
      provenance: { ...provenance, method: "hf-import" },
    }
    return parseFactorSetFile(JSON.stringify(file), where)
  }
  return undefined
}

/** Default check lengths: at/below L0 (capped at 256 tokens) and past it (L0 + 64, capped at the extended max). */
function defaultLengths(config: Record<string, unknown>): number[] {
  const spec = ropeSpecFromConfig(config)
  const L0 = spec.originalMaxPositions ?? spec.maxPositions
  const out = [Math.max(2, Math.min(L0, 256))]
  if (spec.maxPositions > L0) out.push(Math.min(spec.maxPositions, L0 + 64))
  return out
}

/** What to write: the exact setting (hf/), and the HF pair for hf-longrope/ and GGUF when they differ. */
function settings(o: ExportOptions, sourceConfig: Record<string, unknown>, notes: string[]) {
  const configFile = join(o.model, "config.json")
  if (o.factors === undefined) {
    const scaling = ropeSpecFromConfig(sourceConfig, configFile).scaling
    notes.push(`no factor set: the model's own rope_scaling (${typeOf(scaling)}) is exported`)
    return { factorSet: factorSetOfModel(sourceConfig, configFile), exact: { scaling: scaling === undefined ? undefined : { ...scaling } } as HfRope, pair: undefined }
  }
  const factorSet = parseFactorSetFile(readFileSync(o.factors, "utf8"), o.factors)
  const spec = ropeSpecFromConfig(sourceConfig, configFile)
  if (factorSet.model.rotary_dim !== spec.rotaryDim || factorSet.model.base !== spec.base) {
    throw inputError(o.factors, `factor set is for rotary_dim ${factorSet.model.rotary_dim}, base ${factorSet.model.base}; the model has ${spec.rotaryDim}, ${spec.base}`)
  }
  const r = ropeFromFactorSet(factorSet, sourceConfig, o.factors)
  notes.push(factorSet.sets.length > 2 ? `${factorSet.sets.length} sets: hf/ carries the exact longrope-research table; hf-longrope/ and the GGUF carry the ${r.pairNote}` : r.pairNote)
  return { factorSet, exact: r.exact, pair: r.hfPair }
}

/** Shared by the checks: the options, the lengths scored, the models loaded once each (by folder and scaling). */
interface Run {
  readonly o: ExportOptions
  readonly lengths: readonly number[]
  readonly vocab: number
  readonly factorSet: FactorSetFile | undefined
  readonly exact: HfRope
  readonly pair: HfRope | undefined
  readonly models: Map<string, LlamaModel>
  readonly model: (dir: string, scaling?: Record<string, unknown> | null) => Promise<LlamaModel>
  readonly notes: string[]
  readonly log: (line: string) => void
}

/** hf/ (and hf-longrope/) reloaded and scored against the source weights under the same rope_scaling. */
async function checkHf(r: Run, dir: string, rope: HfRope, pairDir: string): Promise<ExportChecks["checks"][number]> {
  const { o, factorSet } = r
  r.log(`checking ${dir}`)
  const exported = await r.model(dir)
  const reference = o.factors === undefined ? await r.model(o.model) : await r.model(o.model, rope.scaling ?? null)
  const scored: ScoreCheck[] = []
  const vsFactorSet: ScoreCheck[] = []
  for (const T of r.lengths) {
    const toks = checkTokens(T, r.vocab)
    const got = await exported.logprobs(toks)
    const d = maxAbs(got, await reference.logprobs(toks))
    scored.push({ length: T, against: o.factors === undefined ? "source model" : "source weights with the same rope_scaling", maxAbsDiff: d, tolerance: HF_TOLERANCE, ok: d <= HF_TOLERANCE })
    if (factorSet !== undefined && o.factors !== undefined && (r.pair === undefined || dir === pairDir)) {
      const research = await r.model(o.model, factorSetToScaling(factorSet))
      const dr = maxAbs(got, await research.logprobs(toks))
      vsFactorSet.push({
        length: T, against: "source weights with the factor set's own (longrope-research) table", maxAbsDiff: dr, tolerance: null, ok: true,
        note: dr <= HF_TOLERANCE ? "same" : `differs: ${exported.rope(T).reason} vs ${research.rope(T).reason}`,
      })
    }
  }
  return {
    format: "hf", path: dir, ropeType: typeOf(rope.scaling ?? (o.factors === undefined ? r.exact.scaling : undefined)), reloaded: "loadLlama", scored,
    ...(vsFactorSet.length > 0 ? { vsFactorSet } : {}), ok: scored.every((s) => s.ok),
  }
}

/** The table llama.cpp will use at each length, from the GGUF's metadata, against ropeway's. */
function ggufRopeChecks(r: Run, decoded: ReturnType<typeof decodeGguf>, g: ReturnType<typeof llamaToGguf>, inspected: ReturnType<typeof inspectLlama>) {
  const c = inspected.config
  const ropeChecks: GgufRopeCheck[] = []
  const tables = new Map<number, RopeTable>()
  for (const T of r.lengths) {
    const cpp = llamaCppRope(decoded, T)
    const L0 = c.rope.originalMaxPositions
    // llama.cpp chooses LongRoPE's set by allocated context (≥ 256): a short input may get the long set.
    const hfShort = g.rope.form === "longrope" && L0 !== undefined && T <= L0
    const compared = hfShort && cpp.factors === "rope_factors_long" ? L0 + 1 : T
    const ours = inspected.rope(compared)
    const inv = ours.invFreq instanceof Float64Array ? ours.invFreq : ours.invFreq[0]!
    let rel = 0
    cpp.invFreq.forEach((x, i) => (rel = Math.max(rel, Math.abs(x - inv[i]!) / inv[i]!)))
    ropeChecks.push({
      length: T, contextSize: llamaCppContext(T), llamaCppFactors: cpp.factors, comparedWithLength: compared, ropewayChoice: ours.reason,
      invFreqMaxRelDiff: rel, attentionScaleDiff: Math.abs(cpp.attentionScale - ours.attentionScale), matchesHf: compared === T,
    })
    tables.set(T, { rotaryDim: c.rope.rotaryDim, invFreq: cpp.invFreq, originalInvFreq: defaultInvFreq(c.rope.base, c.rope.rotaryDim), startTokens: 0, attentionScale: cpp.attentionScale })
  }
  return { ropeChecks, tables }
}

/** llama.cpp scoring the GGUF against ropeway on the same weights with llama.cpp's table (when installed). */
async function llamaCppChecks(r: Run, path: string, sourceDir: string, dtype: "f32" | "f16", ropeChecks: readonly GgufRopeCheck[], tables: ReadonlyMap<number, RopeTable>): Promise<GgufCheck["llamacpp"]> {
  if (r.o.llamacpp === false) return { skipped: "disabled (llamacpp: false)" }
  if (!(await llamaCppAvailable())) return { skipped: "node-llama-cpp is not installed" }
  const reference = await r.model(sourceDir)
  const scored: ScoreCheck[] = []
  for (const T of r.lengths) {
    const toks = checkTokens(T, r.vocab)
    const cpp = await llamaCppLogprobs(path, toks, { contextSize: T, threads: r.o.threads ?? Math.min(8, availableParallelism()) })
    const ours = await reference.logprobs(toks, { rope: tables.get(T)! })
    const scaled = maxScaled(cpp, ours)
    const rc = ropeChecks.find((x) => x.length === T)!
    scored.push({
      length: T, against: `ropeway on the exported weights with llama.cpp's table at context ${llamaCppContext(T)} (${rc.llamaCppFactors})`,
      maxAbsDiff: maxAbs(cpp, ours), maxScaledDiff: scaled, tolerance: dtype === "f32" ? GGUF_TOLERANCE : null, ok: dtype === "f16" || scaled <= GGUF_TOLERANCE,
      ...(dtype === "f16" ? { note: "f16 weights: reported, not held to the f32 tolerance" } : {}),
    })
  }
  return scored
}

/** The GGUF from the folder carrying the HF pair: written, decoded and compared, its RoPE and (optionally) llama.cpp's scores checked. */
async function checkGguf(r: Run, out: string, sourceDir: string): Promise<ExportChecks["checks"][number]> {
  const dtype = r.o.dtype ?? "f32"
  const inspected = inspectLlama(sourceDir)
  const host = readHostLlama(inspected)
  const g = llamaToGguf(host, { dtype })
  const path = join(out, "gguf", `model-${dtype}.gguf`)
  mkdirSync(join(out, "gguf"), { recursive: true })
  await writeGguf(path, g)
  r.log(`checking ${path}`)
  const decoded = decodeGguf(new Uint8Array(readFileSync(path)), path)
  let tensorDiff = decoded.tensors.length === g.tensors.length ? 0 : Infinity
  for (const t of g.tensors) tensorDiff = Math.max(tensorDiff, maxAbs(t.data, decoded.tensors.find((d) => d.name === t.name)?.data ?? []))
  const c = inspected.config
  let qkDiff = 0
  host.layers.forEach((l, i) => {
    const q = decoded.tensors.find((t) => t.name === `blk.${i}.attn_q.weight`)?.data ?? new Float32Array()
    const k = decoded.tensors.find((t) => t.name === `blk.${i}.attn_k.weight`)?.data ?? new Float32Array()
    qkDiff = Math.max(qkDiff, maxAbs(unpermuteRotaryRows(q, c.numHeads, c.headDim, c.hiddenSize), l.q), maxAbs(unpermuteRotaryRows(k, c.numKvHeads, c.headDim, c.hiddenSize), l.k))
  })
  const tensorTol = dtype === "f32" ? 0 : 1e-3
  const { ropeChecks, tables } = ggufRopeChecks(r, decoded, g, inspected)
  const llamacpp = await llamaCppChecks(r, path, sourceDir, dtype, ropeChecks, tables)
  r.notes.push(...g.rope.notes.filter((n) => n.includes("sliding window")).map((n) => `GGUF: ${n}`))
  const ropeOk = ropeChecks.every((x) => x.invFreqMaxRelDiff <= 1e-6 && x.attentionScaleDiff <= 1e-6)
  if (ropeChecks.some((x) => !x.matchesHf)) {
    r.notes.push(`GGUF: llama.cpp allocates contexts in multiples of 256, so with L0 ${c.rope.originalMaxPositions} it uses rope_factors_long even where HF would use short_factor (lengths ${ropeChecks.filter((x) => !x.matchesHf).map((x) => x.length).join(", ")})`)
  }
  return {
    format: "gguf", path, dtype, ropeForm: g.rope.form, notes: g.rope.notes,
    decoded: { tensors: decoded.tensors.length, maxAbsDiff: tensorDiff, qkUnpermutedMaxAbsDiff: qkDiff },
    rope: ropeChecks, llamacpp,
    ok: tensorDiff <= tensorTol && qkDiff <= tensorTol && ropeOk && (!Array.isArray(llamacpp) || llamacpp.every((s) => s.ok)),
  }
}

/** The adapter alone (peft/), re-read and fitted against the source's base weights. */
function checkPeft(source: string, dir: string): ExportChecks["checks"][number] {
  if (writePeftFolder(source, dir) === undefined) return { format: "peft", skipped: "the model carries no LoRA adapter (adapter_config.json)" }
  const adapter = readPeftAdapter(dir)!
  const fitted = new AdaptedWeights(Checkpoint.open(source), adapter)
  return { format: "peft", path: dir, tensors: adapter.tensors.size, ok: fitted.adapted > 0 }
}

/** The formats written and checked (hf, csv, gguf); the folders a GGUF needs are staged when hf is not asked for. */
async function writeAndCheck(r: Run, out: string, formats: readonly ExportFormat[], sourceConfig: Record<string, unknown>): Promise<ExportChecks["checks"]> {
  const { o, exact, pair } = r
  const exactConfig = o.factors === undefined ? sourceConfig : configWithRope(sourceConfig, exact)
  const pairConfig = pair === undefined ? undefined : configWithRope(sourceConfig, pair)
  const hfDir = join(out, "hf")
  const pairDir = join(out, "hf-longrope")
  // GGUF is made from a folder carrying the HF pair; without the hf format it is staged and removed.
  const staging = join(out, ".staging-hf")
  const checks: ExportChecks["checks"][number][] = []
  try {
    const wantHf = formats.includes("hf")
    if (wantHf || formats.includes("gguf")) {
      writeHfFolder(o.model, wantHf ? hfDir : staging, exactConfig)
      if (pairConfig !== undefined) writeHfFolder(o.model, wantHf ? pairDir : `${staging}-pair`, pairConfig)
    }
    const ggufSourceDir = pairConfig === undefined ? (wantHf ? hfDir : staging) : wantHf ? pairDir : `${staging}-pair`
    if (wantHf) for (const [dir, rope] of pair === undefined ? [[hfDir, exact] as const] : [[hfDir, exact] as const, [pairDir, pair] as const]) checks.push(await checkHf(r, dir, rope, pairDir))
    // Only the GGUF check's reference stays on the GPU: real models are large.
    for (const [key, m] of r.models) {
      if (!key.startsWith(`${ggufSourceDir}\u0000`) || !formats.includes("gguf")) (m.dispose(), r.models.delete(key))
    }
    if (formats.includes("csv")) {
      if (r.factorSet === undefined) checks.push({ format: "csv", skipped: "no factor set (give --factors, or a model whose rope_scaling is longrope / longrope-research)" })
      else {
        const files = writeFactorCsvs(r.factorSet, join(out, "csv"))
        checks.push({ format: "csv", files, ok: files.every((f) => f.maxAbsDiff === 0) })
      }
    }
    if (formats.includes("gguf")) checks.push(await checkGguf(r, out, ggufSourceDir))
    if (formats.includes("peft")) checks.push(checkPeft(o.model, join(out, "peft")))
  } finally {
    for (const m of r.models.values()) m.dispose()
    rmSync(staging, { recursive: true, force: true })
    rmSync(`${staging}-pair`, { recursive: true, force: true })
  }
  return checks
}

export async function runExport(rt: GpuRuntime, o: ExportOptions): Promise<ExportChecks> {
  const formats = o.formats ?? DEFAULT_FORMATS
  const out = resolve(o.out)
  const sourceConfig = readConfigJson(o.model)
  const notes: string[] = []
  mkdirSync(out, { recursive: true })
  const { factorSet, exact, pair } = settings(o, sourceConfig, notes)
  const exactConfig = o.factors === undefined ? sourceConfig : configWithRope(sourceConfig, exact)
  const models = new Map<string, LlamaModel>()
  const r: Run = {
    o, lengths: o.checkLengths ?? defaultLengths(exactConfig), vocab: Number(sourceConfig["vocab_size"]), factorSet, exact, pair, models, notes,
    log: o.log ?? (() => {}),
    model: async (dir, scaling) => {
      const key = `${dir}\u0000${JSON.stringify(scaling)}`
      let m = models.get(key)
      if (m === undefined) models.set(key, (m = await loadLlama(rt, dir, scaling === undefined ? {} : { ropeScaling: scaling })))
      return m
    },
  }
  const checks = await writeAndCheck(r, out, formats, sourceConfig)
  const result: ExportChecks = {
    source: {
      model: o.sourceNames?.model ?? resolve(o.model),
      factors: o.factors === undefined ? null : (o.sourceNames?.factors ?? resolve(o.factors)),
    },
    formats: [...formats],
    checks,
    notes,
    ok: checks.every((c) => !("ok" in c) || c.ok),
  }
  // Paths inside the folder are written relative to it, so checks.json reads the same wherever the folder is moved or committed.
  const portable = {
    ...result,
    checks: result.checks.map((c) => ("path" in c ? { ...c, path: relative(out, c.path) } : "files" in c ? { ...c, files: c.files.map((f) => ({ ...f, file: relative(out, f.file) })) } : c)),
  }
  writeFileAtomic(join(out, "checks.json"), `${JSON.stringify(portable, null, 2)}\n`)
  return result
}
