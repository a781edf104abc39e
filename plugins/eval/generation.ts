/**
 * Greedy generation for the retrieval evaluations (passkey, RULER-shaped needles), shared by every method:
 * baselines generate under one table, their scale-L/L0 table resolved for prompt + maxNew (policy
 * "fixed"); `model` under its own method by sequence length, re-prefilling when the table changes
 * ("reprefill", what HF's cache-less generation in the paper's script computes). Each generation is
 * checkpointed under a hash of its table(s), prompt and decoding, so equal tables share it and an
 * interrupted evaluation resumes after the last one finished.
 */
import { Effect } from "effect"
import { fail, type RopewayError } from "../../common/errors.ts"
import { asGenerator, generate, type GenerateOptions, type Generator } from "../models/generate.ts"
import { type EvalContext, saved, sha, tableAt } from "./context.ts"
import { type Method, tableKey } from "./protocols.ts"

export interface Generated {
  readonly tokens: readonly number[]
  /** The generated tokens as text (BOS, EOS and ids past the tokenizer's vocabulary left out). */
  readonly text: string
  /** generate's boundary policy. */
  readonly policy: "reprefill" | "fixed"
  /** The table used, as its method describes it. */
  readonly rope: string
}

export interface GenerationRun {
  /** Method `method`'s greedy continuation of `ids` at evaluation length L. */
  readonly generate: (method: Method, L: number, ids: readonly number[], maxNew: number, what: string) => Effect.Effect<Generated, RopewayError>
}

/** How one prompt generates: the table (or the model's own, per length), the cache id and what a row says of it. */
function howToGenerate(e: EvalContext, gen: { stop: readonly number[] }, method: Method, L: number, promptLength: number, maxNew: number) {
  return Effect.gen(function* () {
    const n = promptLength + maxNew
    const chunk = e.chunk === undefined ? {} : { chunk: e.chunk }
    if (method === "model") {
      const seen = new Set<string>()
      for (let k = promptLength; k <= n; k++) seen.add(tableKey(e.model.rope(k)))
      const first = e.model.rope(promptLength)
      return {
        key: seen.size === 1 ? [...seen][0]! : `model:${[...seen].join(",")}`,
        opts: { maxNew, policy: "reprefill", stop: gen.stop, ...chunk } satisfies GenerateOptions,
        policy: "reprefill" as const,
        rope: `the model's own, by sequence length (at ${promptLength}: ${first.method}: ${first.reason})`,
      }
    }
    const table = yield* tableAt(e, method, L, n)
    return {
      key: tableKey(table),
      opts: { maxNew, policy: "fixed", stop: gen.stop, rope: () => table, ...chunk } satisfies GenerateOptions,
      policy: "fixed" as const,
      rope: `${table.method}: ${table.reason}`,
    }
  })
}

export function generationRun(e: EvalContext, purpose: string): Effect.Effect<GenerationRun, RopewayError> {
  return Effect.gen(function* () {
    const g: Generator | undefined = asGenerator(e.model)
    if (g === undefined) return yield* fail(`${purpose}: the model has no incremental decoding (session) to generate with`)
    const stop = e.tok.eos === undefined ? [] : [e.tok.eos]
    const decode = (ids: readonly number[]): string => e.tok.decode(ids.filter((t) => t < e.tok.vocabSize && t !== e.tok.bos && t !== e.tok.eos))
    const memo = new Map<string, readonly number[]>()
    return {
      generate: (method, L, ids, maxNew, what) =>
        Effect.gen(function* () {
          const how = yield* howToGenerate(e, { stop }, method, L, ids.length, maxNew)
          const id = sha(`${how.key}|${sha(ids.join(","))}|${maxNew}|${stop.join(",")}`)
          let tokens = memo.get(id)
          if (tokens === undefined) {
            tokens = yield* saved(e, `gen-${id}`, async () => (await generate(g, Uint32Array.from(ids), how.opts)).tokens, what)
            memo.set(id, tokens)
          }
          return { tokens, text: decode(tokens), policy: how.policy, rope: how.rope }
        }),
    }
  })
}
