/**
 * The hostile-file fuzzer's worker (run by hostile-files.test.ts as its own process, so a crash, a hang
 * or a giant allocation shows as that, not as a failed test process): mutates valid inputs of every
 * loader ropeway has for files from outside, feeds each mutant to the loader and prints one JSON line
 * per case, then a closing line with the process's peak RSS before the first case and at the end.
 *
 *   bun test/fuzz/hostile-child.ts SEED CASES_PER_FORMAT [FORMAT...]
 *
 * A case is `ok` (the loader accepted it), `clean` (an InputError, or WorkflowInvalid for workflow files,
 * whose message is one line of at most 1000 characters naming the file; WorkflowInvalid lists problems one
 * such line each) or `bad` (anything else: another error type, a longer or multi-line message, no file named).
 */
import { Effect } from "effect"
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { InputError } from "../../common/errors.ts"
import { loadWorkflow } from "../../cli/workflow.ts"
import { loadHfTokenizer } from "../../plugins/data/tokenizer.ts"
import { decodeGguf, encodeGguf } from "../../common/gguf.ts"
import { llamaToGguf, readHostLlama } from "../../plugins/models/llama/gguf-export.ts"
import { inspectLlama } from "../../plugins/models/llama/model.ts"
import { Checkpoint } from "../../common/safetensors.ts"
import { type FactorSetFile, factorSetToScaling, formatFactorCsv, formatFactorSetFile, parseFactorCsv, parseFactorSetFile, ropeSpecFromConfig } from "../../plugins/rope/formats.ts"
import { resolveRope } from "../../plugins/rope/index.ts"
import { rng as mulberry, writeRandomModel } from "../models/random-model.ts"

const ROOT = resolve(import.meta.dirname, "../..")
const [seedArg, casesArg, ...only] = process.argv.slice(2)
const SEED = Number(seedArg ?? 1)
const CASES = Number(casesArg ?? 100)

// ---- mutations -----------------------------------------------------------------------------------

type Rand = () => number
const int = (r: Rand, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1))
const choose = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, 0, xs.length - 1)]!

/** Integers at the edges of every width a header field may have. */
const EDGE_INTS: readonly bigint[] = [0n, 1n, 7n, 8n, 255n, 256n, 0x7fffn, 0xffffn, 0x7fffffffn, 0x80000000n, 0xffffffffn, 1n << 32n, (1n << 53n) + 1n, 1n << 62n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 1n]

/** Byte-level damage: bit flips, edge bytes, edge integers written over, truncation, insertion, deletion, duplication. */
const mutateBytes = (src: Uint8Array, r: Rand): Uint8Array => {
  let b = Uint8Array.from(src)
  for (let n = int(r, 1, 3); n > 0; n--) {
    const at = b.length === 0 ? 0 : int(r, 0, b.length - 1)
    switch (int(r, 0, 7)) {
      case 0: if (b.length > 0) b[at] = b[at]! ^ (1 << int(r, 0, 7)); break
      case 1: if (b.length > 0) b[at] = choose(r, [0x00, 0xff, 0x7f, 0x80, 0x20, 0x22, 0x5b, 0x7b]); break
      case 2:
      case 3: {
        const width = choose(r, [4, 8])
        const pos = Math.min(Math.max(0, b.length - width), r() < 0.5 ? at - (at % width) : at)
        const v = choose(r, EDGE_INTS) & ((1n << BigInt(width * 8)) - 1n)
        for (let i = 0; i < width && pos + i < b.length; i++) b[pos + i] = Number((v >> BigInt(8 * i)) & 0xffn)
        break
      }
      case 4: b = b.slice(0, at); break
      case 5: { const ins = Uint8Array.from({ length: int(r, 1, 64) }, () => int(r, 0, 255)); b = Uint8Array.from([...b.subarray(0, at), ...ins, ...b.subarray(at)]); break }
      case 6: b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(Math.min(b.length, at + int(r, 1, 256)))]); break
      case 7: { const len = int(r, 1, 512); b = Uint8Array.from([...b.subarray(0, at), ...b.subarray(at, at + len), ...b.subarray(at)]); break }
    }
  }
  return b
}

const nested = (depth: number, leaf: unknown): unknown => {
  let v = leaf
  for (let i = 0; i < depth; i++) v = [v]
  return v
}

/** Values a hostile file puts where a loader expects something sensible. */
const hostileValue = (r: Rand): unknown =>
  choose(r, [
    () => null, () => true, () => -1, () => 0, () => 0.5, () => 1e308, () => -1e308, () => 2 ** 53 + 2, () => 2 ** 31, () => 2 ** 64, () => 1e-320,
    () => "", () => "x".repeat(int(r, 1, 100_000)), () => "\u0000\n\u2028", () => [], () => ({}),
    () => Array.from({ length: int(r, 0, 200_000) }, () => 1), () => nested(int(r, 10, 20_000), 1), () => ({ __proto__: { a: 1 }, constructor: 1 }),
    () => [2 ** 40, 2 ** 40], () => [-1, 3], () => [3, 1], () => ["a", 1], () => "F64", () => "BF16", () => "I8",
  ])()

type JsonNode = { parent: Record<string, unknown> | unknown[]; key: string | number }
const nodes = (v: unknown, out: JsonNode[] = [], depth = 0): JsonNode[] => {
  if (depth > 12 || typeof v !== "object" || v === null) return out
  const entries: [string | number, unknown][] = Array.isArray(v) ? v.slice(0, 64).map((x, i) => [i, x]) : Object.entries(v)
  for (const [k, x] of entries) {
    out.push({ parent: v as Record<string, unknown>, key: k })
    nodes(x, out, depth + 1)
  }
  return out
}

/** Structure-aware damage to JSON: a field replaced by a hostile value, deleted, or its type swapped; sometimes the text damaged too. */
const mutateJson = (text: string, r: Rand): string => {
  const v = JSON.parse(text) as unknown
  for (let n = int(r, 1, 3); n > 0; n--) {
    const all = nodes(v)
    if (all.length === 0) break
    const { parent, key } = choose(r, all)
    const p = parent as Record<string | number, unknown>
    const op = int(r, 0, 9)
    if (op === 0 && !Array.isArray(parent)) delete p[key]
    else if (op === 1) p[key] = typeof p[key] === "number" ? String(p[key]) : typeof p[key] === "string" ? Number(p[key]) || 0 : p[key]
    else if (op === 2 && typeof p[key] === "number") p[key] = (p[key] as number) * choose(r, [-1, 0, 1e9, 1e-9, 2 ** 32])
    else p[key] = hostileValue(r)
  }
  let out: string
  try {
    out = JSON.stringify(v)
  } catch {
    out = text // a value JSON cannot hold (too deep): keep the text, damage its bytes below
  }
  return r() < 0.2 ? new TextDecoder().decode(mutateBytes(new TextEncoder().encode(out), r)) : out
}

/** Text-level damage to YAML: a scalar replaced, a line dropped or doubled, indentation shifted, or a hostile document. */
const mutateYaml = (text: string, r: Rand): string => {
  const lines = text.split("\n")
  for (let n = int(r, 1, 3); n > 0; n--) {
    const i = int(r, 0, lines.length - 1)
    switch (int(r, 0, 7)) {
      case 0: lines[i] = lines[i]!.replace(/: ([^{}\[\],\n]+)$/, `: ${choose(r, ["-1", "0", "1e309", "99999999999999999999", "''", "[]", "{}", "*nope", "&a x", "!!binary AAAA", "null", "~", "0x7fffffff", ".nan", "[1, [2, [3]]]"])}`); break
      case 1: lines.splice(i, 1); break
      case 2: lines.splice(i, 0, lines[i]!); break
      case 3: lines[i] = ` ${lines[i]}`; break
      case 4: lines[i] = lines[i]!.replace(/\b\d+\b/, () => choose(r, ["-5", "0", "4294967296", "1.5", "1e400"])); break
      case 5: lines.push(`anchors: &a [${"x, ".repeat(20)}x]`, ...Array.from({ length: 8 }, (_, k) => `b${k}: &b${k} [${Array(9).fill(k === 0 ? "*a" : `*b${k - 1}`).join(", ")}]`)); break
      case 6: lines.push(`deep: ${"[".repeat(int(r, 100, 5000))}${"]".repeat(int(r, 0, 5000))}`); break
      case 7: return new TextDecoder().decode(mutateBytes(new TextEncoder().encode(lines.join("\n")), r))
    }
  }
  return lines.join("\n")
}

// ---- valid inputs ----------------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), "ropeway-fuzz-"))
const baseModel = join(work, "model")
writeRandomModel(baseModel, { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 258, maxPositions: 32, seed: 5 })
const shardedModel = join(work, "sharded")
writeRandomModel(shardedModel, { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 258, maxPositions: 32, seed: 6, shards: 2, dtype: "BF16" })
const tokenizerDir = join(ROOT, "test/fixtures/tokenizer")
const factorSet: FactorSetFile = {
  format: "ropeway-factor-set",
  version: 1,
  model: { rotary_dim: 16, base: 10000, original_max_position_embeddings: 32, num_hidden_layers: 2 },
  sets: [
    { max_length: 32, factors: new Array<number>(8).fill(1) },
    { max_length: 128, factors: [1, 1.2, 1.5, 2, 2.5, 3, 3.5, 4], mscale: "su" },
  ],
  provenance: { method: "test", run_id: null, lengths: [128], scale: 4 },
}
const gguf = encodeGguf(llamaToGguf(readHostLlama(inspectLlama(baseModel)), { dtype: "f16" }))
const readBytes = (p: string): Uint8Array => new Uint8Array(readFileSync(p))
const configText = readFileSync(join(baseModel, "config.json"), "utf8")

// ---- formats: each makes one case folder from a mutant and runs its loader on it ----------------------

interface Format {
  readonly name: string
  /** Writes a mutated input into `dir`; returns what the loader is given. */
  readonly make: (dir: string, r: Rand) => string
  readonly load: (input: string) => unknown | Promise<unknown>
}

const modelFolder = (dir: string, from: string, files: Record<string, Uint8Array | string>): string => {
  mkdirSync(dir, { recursive: true })
  for (const f of ["config.json", "model.safetensors", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]) {
    try {
      copyFileSync(join(from, f), join(dir, f))
    } catch {
      // not in this layout
    }
  }
  for (const [name, data] of Object.entries(files)) writeFileSync(join(dir, name), data)
  return dir
}

/** safetensors with its header parsed, damaged as JSON and re-framed (its length right, or absurd). */
const mutateSafetensors = (bytes: Uint8Array, r: Rand): Uint8Array => {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const len = Number(view.getBigUint64(0, true))
  const header = new TextDecoder().decode(bytes.subarray(8, 8 + len))
  const data = bytes.subarray(8 + len)
  const choice = int(r, 0, 3)
  if (choice === 0) return mutateBytes(bytes, r)
  const newHeader = new TextEncoder().encode(choice === 1 ? header : mutateJson(header, r))
  const out = new Uint8Array(8 + newHeader.length + data.length)
  out.set(newHeader, 8)
  out.set(data, 8 + newHeader.length)
  const lenField = choice === 1 ? choose(r, EDGE_INTS) : BigInt(newHeader.length)
  new DataView(out.buffer).setBigUint64(0, lenField, true)
  return out
}

/** What a model's loader does with a folder: config, every tensor's header and shape, every tensor read, two RoPE tables. */
const loadModel = (dir: string) => {
  const m = inspectLlama(dir)
  for (const name of m.checkpoint.tensors.keys()) m.checkpoint.read(name)
  m.rope(16)
  m.rope(64)
  return m.config
}

const FORMATS: readonly Format[] = [
  {
    name: "safetensors",
    make: (dir, r) => modelFolder(dir, baseModel, { "model.safetensors": mutateSafetensors(readBytes(join(baseModel, "model.safetensors")), r) }),
    load: loadModel,
  },
  {
    name: "safetensors-sharded",
    make: (dir, r) => {
      const which = choose(r, ["model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
      const src = readBytes(join(shardedModel, which))
      const bytes = which.endsWith(".json") ? new TextEncoder().encode(mutateJson(new TextDecoder().decode(src), r)) : mutateSafetensors(src, r)
      return modelFolder(dir, shardedModel, { [which]: bytes })
    },
    load: (dir) => {
      const c = Checkpoint.open(dir)
      for (const name of c.tensors.keys()) c.read(name)
      return loadModel(dir)
    },
  },
  {
    name: "config.json",
    make: (dir, r) => modelFolder(dir, baseModel, { "config.json": mutateJson(configText, r) }),
    load: loadModel,
  },
  {
    name: "tokenizer.json",
    make: (dir, r) => {
      mkdirSync(dir)
      const which = choose(r, ["tokenizer.json", "tokenizer.json", "tokenizer.json", "tokenizer_config.json"])
      for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
        const text = readFileSync(join(tokenizerDir, f), "utf8")
        writeFileSync(join(dir, f), f === which ? mutateJson(text, r) : text)
      }
      return dir
    },
    load: (dir) => {
      const t = loadHfTokenizer(dir)
      return t.decode(t.encode("Hello, world: 12345 passkey\n"))
    },
  },
  {
    name: "workflow.yaml",
    make: (dir, r) => {
      mkdirSync(dir)
      const src = choose(r, ["workflows/smoke.yaml", "workflows/default.yaml", "workflows/search-budget.yaml"])
      const file = join(dir, "workflow.yaml")
      writeFileSync(file, mutateYaml(readFileSync(join(ROOT, src), "utf8"), r))
      return file
    },
    load: (file) => Effect.runPromise(loadWorkflow(file)),
  },
  {
    name: "factor-set.json",
    make: (dir, r) => {
      mkdirSync(dir)
      const file = join(dir, "rope.json")
      writeFileSync(file, mutateJson(formatFactorSetFile(factorSet), r))
      return file
    },
    load: (file) => {
      const f = parseFactorSetFile(readFileSync(file, "utf8"), file)
      // what finetune-factors does with it: a RoPE method over the model's config, tables at two lengths
      const spec = ropeSpecFromConfig(JSON.parse(configText), file, { scaling: factorSetToScaling(f), key: file })
      const table = resolveRope(spec, file)
      table(16)
      table(200)
      return f
    },
  },
  {
    name: "factors.csv",
    make: (dir, r) => {
      mkdirSync(dir)
      const file = join(dir, "factors.csv")
      const valid = formatFactorCsv(r() < 0.5 ? factorSet.sets[1]!.factors as number[] : [factorSet.sets[1]!.factors as number[], factorSet.sets[1]!.factors as number[]])
      writeFileSync(file, mutateBytes(new TextEncoder().encode(valid), r))
      return file
    },
    load: (file) => parseFactorCsv(readFileSync(file, "utf8"), file, choose(mulberry(1), [8, undefined])),
  },
  {
    name: "gguf",
    make: (dir, r) => {
      mkdirSync(dir)
      const file = join(dir, "model.gguf")
      writeFileSync(file, mutateBytes(gguf, r))
      return file
    },
    load: (file) => decodeGguf(readBytes(file), file),
  },
]

// ---- the run ---------------------------------------------------------------------------------------

/** A clean message is one line of at most this many characters. */
const MAX_MESSAGE = 1000

const classify = (e: unknown, input: string): { outcome: "clean" | "bad"; message: string } => {
  const message = e instanceof Error ? e.message : String(e)
  const tag = (e as { _tag?: string } | undefined)?._tag
  const caseDir = input.endsWith(".yaml") || input.endsWith(".json") || input.endsWith(".csv") || input.endsWith(".gguf") ? join(input, "..") : input
  if (tag === "WorkflowInvalid") {
    const lines = message.split("\n")
    return { outcome: lines.every((l) => l.startsWith(input) && l.length <= MAX_MESSAGE) ? "clean" : "bad", message: message.slice(0, 2000) }
  }
  if (e instanceof InputError && !message.includes("\n") && message.length <= MAX_MESSAGE && message.includes(caseDir)) return { outcome: "clean", message }
  return { outcome: "bad", message: `${e instanceof Error ? e.constructor.name : typeof e}: ${message}`.slice(0, 2000) }
}

let caseNo = 0
const baselineKiB = process.resourceUsage().maxRSS
for (const format of FORMATS) {
  if (only.length > 0 && !only.includes(format.name)) continue
  const r = mulberry(SEED * 1000 + FORMATS.indexOf(format))
  for (let i = 0; i < CASES; i++) {
    const dir = join(work, `case-${caseNo++}`)
    const input = format.make(dir, r)
    // ROPEWAY_FUZZ_SHOW=<case>: print that case's input folder and leave it there, loading nothing
    if (process.env["ROPEWAY_FUZZ_SHOW"] !== undefined) {
      if (Number(process.env["ROPEWAY_FUZZ_SHOW"]) === i) console.log(input)
      else rmSync(dir, { recursive: true, force: true })
      continue
    }
    const rssBefore = process.resourceUsage().maxRSS
    process.stdout.write(`${JSON.stringify({ start: format.name, case: i })}\n`)
    const t0 = performance.now()
    let result: { outcome: "ok" | "clean" | "bad"; message: string }
    try {
      await format.load(input)
      result = { outcome: "ok", message: "" }
    } catch (e) {
      result = classify(e, input)
    }
    const ms = performance.now() - t0
    const grewKiB = process.resourceUsage().maxRSS - rssBefore
    process.stdout.write(`${JSON.stringify({ format: format.name, case: i, ms, grewKiB, ...result })}\n`)
    rmSync(dir, { recursive: true, force: true })
  }
}
if (process.env["ROPEWAY_FUZZ_SHOW"] === undefined) rmSync(work, { recursive: true, force: true })
process.stdout.write(`${JSON.stringify({ done: true, baselineKiB, maxRssKiB: process.resourceUsage().maxRSS })}\n`)
