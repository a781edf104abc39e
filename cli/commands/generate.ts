/**
 * `ropeway generate --model DIR (--text FILE|STRING | --tokens FILE) --max-new N [--policy fixed|reprefill|rerotate]
 *  [--rope-scaling JSON] [--stop IDS] [--json]`: greedy continuation with a KV cache. When the RoPE method's table
 * changes with the length (longrope short→long, length buckets, dynamic NTK), `--policy` decides what happens to
 * the cached keys (plugins/models/llama/generate.ts); each change is reported.
 *
 * Input checks (folder, config, tensors, tokens) run before the GPU is acquired, as in `score`.
 */
import { existsSync, statSync } from "node:fs"
import { join } from "node:path"
import { readFile } from "node:fs/promises"
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { Gpu, describeAdapter } from "../../kernels/device.ts"
import { type TextTokenizer, loadHfTokenizer, withBos } from "../../plugins/data/tokenizer.ts"
import type { InspectedModel, ModelFamily } from "../../plugins/models/family.ts"
import { asGenerator, type BoundaryPolicy, type GenerateResult, POLICIES, generate as generateTokens } from "../../plugins/models/generate.ts"
import { checkFits, familiesOf, inspectModel } from "../../plugins/models/registry.ts"
import { registryFromFlags } from "../workflow.ts"
import { inputError } from "../../common/errors.ts"
import { parseRopeScalingFlag, pluginFlag, readTokensFile } from "./score.ts"

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)))
const attempt = <A>(f: () => A): Effect.Effect<A, Error> => Effect.try({ try: f, catch: asError })

/** Parses `--stop`: comma-separated token ids. */
export function parseStopFlag(text: string): number[] {
  const ids = text.split(",").map((s) => s.trim()).filter((s) => s !== "")
  return ids.map((s) => {
    const n = Number(s)
    if (!Number.isSafeInteger(n) || n < 0) throw inputError("--stop", `expected comma-separated token ids, got ${JSON.stringify(s)}`)
    return n
  })
}

export interface GenerateReport {
  readonly tokens: number[]
  readonly text?: string
  readonly switches: GenerateResult["switches"]
  readonly policy: BoundaryPolicy
  readonly seconds: number
  readonly prompt: number
  readonly prefill: GenerateResult["prefill"]
  readonly stopped: GenerateResult["stopped"]
  readonly adapter: string
}

export const generate = Command.make(
  "generate",
  {
    model: Flag.String("model").pipe(Flag.withDescription("Hugging Face model folder (config.json, *.safetensors, optional tokenizer.json)")),
    tokens: Flag.String("tokens").pipe(Flag.withDescription("JSON file: the prompt as an array of token ids (no BOS is added)"), Flag.optional),
    text: Flag.String("text").pipe(Flag.withDescription("prompt text, or a file holding it; tokenized with the folder's tokenizer.json (BOS added when it has one)"), Flag.optional),
    maxNew: Flag.Int("max-new").pipe(Flag.withDescription("tokens to generate")),
    policy: Flag.String("policy").pipe(Flag.withDescription("when the RoPE table changes with the length: fixed (one table for prompt + max-new), reprefill (drop the cache, exact), rerotate (rotate cached keys, O(cache); exact in the first layer only)"), Flag.withDefault("reprefill")),
    ropeScaling: Flag.String("rope-scaling").pipe(Flag.withDescription("HF rope_scaling JSON object; replaces config.json's"), Flag.optional),
    stop: Flag.String("stop").pipe(Flag.withDescription("comma-separated token ids that end generation (default: the tokenizer's EOS, if any)"), Flag.optional),
    json: Flag.Boolean("json").pipe(Flag.withDescription("print one JSON object"), Flag.withDefault(false)),
    plugin: pluginFlag,
  },
  Effect.fn(function* ({ model, tokens, text, maxNew, policy, ropeScaling, stop, json, plugin }) {
    if (!(POLICIES as readonly string[]).includes(policy)) return yield* Effect.fail(inputError("--policy", `expected one of ${POLICIES.join(", ")}, got ${JSON.stringify(policy)}`))
    if (maxNew < 0) return yield* Effect.fail(inputError("--max-new", `must be ≥ 0, got ${maxNew}`))
    const override = Option.isSome(ropeScaling) ? yield* attempt(() => parseRopeScalingFlag(ropeScaling.value)) : undefined
    const families = familiesOf(yield* registryFromFlags(plugin))
    const { family, model: inspected } = yield* attempt(() => inspectModel(families, model, override === undefined ? {} : { ropeScaling: override, ropeSource: "--rope-scaling" }))
    const hasTokenizer = existsSync(join(model, "tokenizer.json"))
    const tokenizer: TextTokenizer | undefined = hasTokenizer ? yield* attempt(() => loadHfTokenizer(model)) : undefined
    if (Option.isSome(tokens) && Option.isSome(text)) return yield* Effect.fail(inputError("--tokens/--text", "give one of them, not both"))
    let ids: number[]
    let source: string
    if (Option.isSome(tokens)) {
      source = tokens.value
      ids = yield* attempt(() => readTokensFile(source))
    } else if (Option.isSome(text)) {
      source = "--text"
      if (tokenizer === undefined) return yield* Effect.fail(inputError(join(model, "tokenizer.json"), "not found (--text needs the model folder's tokenizer.json; use --tokens otherwise)"))
      const body = yield* Effect.tryPromise({ try: async () => (existsSync(text.value) && statSync(text.value).isFile() ? await readFile(text.value, "utf8") : text.value), catch: asError })
      ids = withBos(tokenizer, tokenizer.encode(body))
    } else {
      return yield* Effect.fail(inputError("generate", "give --tokens FILE (a JSON array of token ids) or --text FILE|STRING"))
    }
    if (ids.length === 0) return yield* Effect.fail(inputError(source, "the prompt is empty"))
    yield* attempt(() => inspected.checkSequence(ids, source))
    const stopIds = Option.isSome(stop) ? yield* attempt(() => parseStopFlag(stop.value)) : tokenizer?.eos === undefined ? [] : [tokenizer.eos]
    // Resolve every table the run may need now, so a method's error shows before the GPU starts.
    yield* attempt(() => {
      inspected.rope(ids.length)
      inspected.rope(ids.length + maxNew)
    })
    yield* Effect.provide(run(family, inspected, ids, source, maxNew, policy as BoundaryPolicy, stopIds, tokenizer, json), Gpu.layer)
  }),
).pipe(Command.withDescription("Greedy continuation with a KV cache; --policy decides what happens at a RoPE factor-set switch"))

const run = (family: ModelFamily, inspected: InspectedModel, ids: readonly number[], source: string, maxNew: number, policy: BoundaryPolicy, stop: readonly number[], tokenizer: TextTokenizer | undefined, json: boolean) =>
  Effect.gen(function* () {
    const rt = yield* Gpu
    yield* attempt(() => checkFits(family, inspected, ids.length + maxNew, rt.limits))
    const loaded = yield* Effect.tryPromise({ try: () => family.load(rt, inspected), catch: asError })
    const llama = asGenerator(loaded)
    if (llama === undefined) {
      loaded.dispose()
      return yield* Effect.fail(inputError("--model", `the ${family.name} family gives no KV-cache session to generate with`))
    }
    const started = performance.now()
    const streamed: number[] = []
    const result = yield* Effect.tryPromise({
      try: () =>
        generateTokens(llama, ids, {
          maxNew,
          policy,
          stop,
          source,
          // Without --json and without a tokenizer, ids are printed as they come.
          ...(json || tokenizer !== undefined
            ? {}
            : {
                onToken: (t: number) => {
                  streamed.push(t)
                  process.stdout.write(`${streamed.length > 1 ? " " : ""}${t}`)
                },
              }),
        }),
      catch: asError,
    }).pipe(Effect.ensuring(Effect.sync(() => loaded.dispose())))
    const seconds = (performance.now() - started) / 1000
    const text = tokenizer?.decode(result.tokens)
    if (json) {
      const report: GenerateReport = {
        tokens: result.tokens,
        ...(text === undefined ? {} : { text }),
        switches: result.switches,
        policy,
        seconds,
        prompt: ids.length,
        prefill: result.prefill,
        stopped: result.stopped,
        adapter: describeAdapter(rt.adapter),
      }
      yield* Console.log(JSON.stringify(report))
      return
    }
    if (text !== undefined) process.stdout.write(text)
    process.stdout.write("\n")
    const lines = [`rope      ${result.prefill.method}: ${result.prefill.reason} (prefill of ${ids.length} tokens)`]
    for (const s of result.switches) lines.push(`switch    at length ${s.at}: ${s.from} → ${s.to} (${s.reason}); ${s.action}`)
    lines.push(`policy    ${policy}; ${result.tokens.length} tokens in ${seconds.toFixed(2)} s (${(result.tokens.length / seconds).toFixed(1)} tokens/s)${result.stopped === "stop" ? ", stopped at a stop token" : ""}`)
    yield* Console.error(lines.join("\n"))
  })
