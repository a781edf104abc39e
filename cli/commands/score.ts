/**
 * `ropeway score --model DIR (--tokens FILE | --text FILE) [--rope-scaling JSON] [--chunk N] [--plugin FILE]... [--json]`:
 * next-token log-probs and perplexity of a token sequence under a model folder, read by whichever model
 * family recognises it (the built-in llama family, or a `--plugin`'s).
 *
 * Everything a user can get wrong (folder, config, tensor headers, tokens) is checked before the GPU is
 * acquired, so bad input fails fast with one line; a model too large for the device is refused before
 * loading.
 */
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { Tokenizer } from "@huggingface/tokenizers"
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { Gpu, describeAdapter } from "../../kernels/device.ts"
import { inputError } from "../../common/errors.ts"
import type { InspectedModel, ModelFamily } from "../../plugins/models/family.ts"
import { checkFits, familiesOf, inspectModel } from "../../plugins/models/registry.ts"
import type { ChosenTable } from "../../plugins/rope/index.ts"
import { registryFromFlags } from "../workflow.ts"

const oneLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ").trim()

/** `--plugin FILE` (repeatable): a plugin whose model families the command reads folders with. */
export const pluginFlag = Flag.String("plugin").pipe(Flag.withDescription("a plugin file or npm package to load (its model families), repeatable"), Flag.atLeast(0))

/** Runs plain code that may throw an InputError, as an Effect whose failure the CLI prints as one line. */
const attempt = <A>(f: () => A): Effect.Effect<A, Error> =>
  Effect.try({ try: f, catch: (e) => (e instanceof Error ? e : new Error(String(e))) })

/** Parses `--rope-scaling`: an HF rope_scaling JSON object, or `null` for plain RoPE. */
export function parseRopeScalingFlag(text: string): Record<string, unknown> | null {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw inputError("--rope-scaling", `malformed JSON (${oneLine(e)})`)
  }
  if (v === null) return null
  if (typeof v !== "object" || Array.isArray(v)) throw inputError("--rope-scaling", `expected a JSON object like {"rope_type":"linear","factor":2}, got ${text}`)
  return v as Record<string, unknown>
}

/** Reads a tokens file: a JSON array of non-negative integers. */
export function readTokensFile(file: string): number[] {
  if (!existsSync(file)) throw inputError(file, "tokens file not found")
  let v: unknown
  try {
    v = JSON.parse(readFileSync(file, "utf8"))
  } catch (e) {
    throw inputError(file, `not a JSON array of integers (malformed JSON: ${oneLine(e)})`)
  }
  if (!Array.isArray(v)) throw inputError(file, `not a JSON array of integers (got ${v === null ? "null" : typeof v})`)
  v.forEach((t, i) => {
    if (typeof t !== "number" || !Number.isSafeInteger(t)) throw inputError(file, `not a JSON array of integers (element ${i} is ${JSON.stringify(t)})`)
  })
  return v as number[]
}

/** Tokenizes a text file with the model folder's tokenizer.json (and tokenizer_config.json when present). */
export function tokenizeTextFile(file: string, modelDir: string): number[] {
  if (!existsSync(file)) throw inputError(file, "text file not found")
  const tokPath = join(modelDir, "tokenizer.json")
  if (!existsSync(tokPath)) throw inputError(tokPath, "not found (--text needs the model folder's tokenizer.json; use --tokens otherwise)")
  const readJson = (path: string): Record<string, unknown> => {
    try {
      return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>
    } catch (e) {
      throw inputError(path, `malformed JSON (${oneLine(e)})`)
    }
  }
  const cfgPath = join(modelDir, "tokenizer_config.json")
  const tokenizerJson = readJson(tokPath)
  const tokenizerConfig = existsSync(cfgPath) ? readJson(cfgPath) : {}
  let tokenizer: Tokenizer
  try {
    tokenizer = new Tokenizer(tokenizerJson as never, tokenizerConfig as never)
  } catch (e) {
    throw inputError(tokPath, `cannot build a tokenizer (${oneLine(e)})`)
  }
  return [...tokenizer.encode(readFileSync(file, "utf8"), { add_special_tokens: true }).ids]
}

export interface ScoreResult {
  readonly logprobs: Float64Array
  readonly perplexity: number
}

export const perplexityOf = (logprobs: ArrayLike<number>): number => {
  let sum = 0
  for (let i = 0; i < logprobs.length; i++) sum -= logprobs[i]!
  return Math.exp(sum / logprobs.length)
}

export const score = Command.make(
  "score",
  {
    model: Flag.String("model").pipe(Flag.withDescription("Hugging Face model folder (config.json, *.safetensors)")),
    tokens: Flag.String("tokens").pipe(Flag.withDescription("JSON file: an array of token ids (no BOS is added)"), Flag.optional),
    text: Flag.String("text").pipe(Flag.withDescription("text file, tokenized with the folder's tokenizer.json"), Flag.optional),
    ropeScaling: Flag.String("rope-scaling").pipe(Flag.withDescription("HF rope_scaling JSON object; replaces config.json's"), Flag.optional),
    chunk: Flag.Int("chunk").pipe(Flag.withDescription("tokens per forward chunk"), Flag.withDefault(512)),
    json: Flag.Boolean("json").pipe(Flag.withDescription("print one JSON object"), Flag.withDefault(false)),
    plugin: pluginFlag,
  },
  Effect.fn(function* ({ model, tokens, text, ropeScaling, chunk, json, plugin }) {
    if (chunk < 1) return yield* Effect.fail(inputError("--chunk", `must be ≥ 1, got ${chunk}`))
    const override = Option.isSome(ropeScaling) ? yield* attempt(() => parseRopeScalingFlag(ropeScaling.value)) : undefined
    const families = familiesOf(yield* registryFromFlags(plugin))
    const { family, model: inspected } = yield* attempt(() => inspectModel(families, model, override === undefined ? {} : { ropeScaling: override }))
    let ids: number[]
    let source: string
    if (Option.isSome(tokens) && Option.isSome(text)) return yield* Effect.fail(inputError("--tokens/--text", "give one of them, not both"))
    if (Option.isSome(tokens)) {
      source = tokens.value
      ids = yield* attempt(() => readTokensFile(source))
    } else if (Option.isSome(text)) {
      source = text.value
      ids = yield* attempt(() => tokenizeTextFile(source, model))
    } else {
      return yield* Effect.fail(inputError("score", "give --tokens FILE (a JSON array of token ids) or --text FILE"))
    }
    yield* attempt(() => inspected.checkSequence(ids, source))
    if (ids.length < 2) return yield* Effect.fail(inputError(source, `needs at least 2 tokens to score, got ${ids.length}`))
    const table = yield* attempt(() => inspected.rope(ids.length))
    yield* Effect.provide(run(model, family, inspected, table, ids, source, chunk, json), Gpu.layer)
  }),
).pipe(Command.withDescription("Next-token log-probs and perplexity of a token sequence"))

/** The GPU part, after every input check has passed. */
const run = (model: string, family: ModelFamily, inspected: InspectedModel, table: ChosenTable, ids: readonly number[], source: string, chunk: number, json: boolean) =>
  Effect.gen(function* () {
    const rt = yield* Gpu
    yield* attempt(() => checkFits(family, inspected, ids.length, rt.limits, { chunk }))
    const started = performance.now()
    const llama = yield* Effect.tryPromise({ try: () => family.load(rt, inspected), catch: asError })
    const loaded = performance.now()
    const logprobs = yield* Effect.tryPromise({ try: () => llama.logprobs(ids, { chunk, source, rope: table }), catch: asError }).pipe(
      Effect.ensuring(Effect.sync(() => llama.dispose())),
    )
    const seconds = (performance.now() - loaded) / 1000
    const perplexity = perplexityOf(logprobs)
    const tokensPerSecond = ids.length / seconds
    if (json) {
      yield* Console.log(
        JSON.stringify({
          logprobs: Array.from(logprobs),
          perplexity,
          tokens: ids.length,
          rope: { method: table.method, reason: table.reason },
          adapter: describeAdapter(rt.adapter),
          loadSeconds: (loaded - started) / 1000,
          seconds,
          tokensPerSecond,
        }),
      )
    } else {
      yield* Console.log(
        [
          `model       ${model} (${inspected.config.architecture}, ${family.name} family, ${inspected.config.numLayers} layers, d=${inspected.config.hiddenSize}, vocab ${inspected.config.vocabSize})`,
          `adapter     ${describeAdapter(rt.adapter)}`,
          `rope        ${table.method}: ${table.reason}`,
          `tokens      ${ids.length} (${logprobs.length} scored)`,
          `perplexity  ${perplexity.toPrecision(6)}`,
          `speed       ${tokensPerSecond.toFixed(1)} tokens/s (${seconds.toFixed(2)} s; load ${((loaded - started) / 1000).toFixed(2)} s)`,
        ].join("\n"),
      )
    }
  })

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)))
