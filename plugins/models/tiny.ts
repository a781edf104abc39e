/**
 * The built-in model `tiny`: a small byte-level LLaMA (vocab 258 = 256 bytes + BOS 256 + EOS 257, as
 * plugins/data's byteTokenizer), original context 256.
 *
 * RANDOM-INIT, NOT TRAINED. Until ropeway pre-trains its own tiny model, `tiny` is deterministic random
 * weights from the workflow's seed: it exercises every stage end to end and shows how RoPE settings change
 * a fixed function of position, but its perplexities say nothing about language modelling.
 */
import { Effect } from "effect"
import type { ModelContribution } from "../../pipeline/workflow/plugin.ts"
import { StageError } from "../../pipeline/workflow/stage.ts"
import { BYTE_BOS, BYTE_EOS, BYTE_VOCAB_SIZE } from "../data/tokenizer.ts"
import { type RandomLlamaOptions, writeRandomLlama } from "./llama/random.ts"

/** The shape of `tiny`; the seed comes from the workflow. */
export const TINY: Omit<RandomLlamaOptions, "seed"> = {
  vocab: BYTE_VOCAB_SIZE,
  hidden: 128,
  layers: 4,
  heads: 4,
  kvHeads: 2,
  intermediate: 384,
  maxPositions: 256,
  ropeTheta: 10000,
  tied: false,
  bosTokenId: BYTE_BOS,
  eosTokenId: BYTE_EOS,
}

export const tinyModel: ModelContribution = {
  name: "tiny",
  version: "random-init-1",
  description:
    `RANDOM-INIT (untrained) byte-level LLaMA: ${TINY.layers} layers, hidden ${TINY.hidden}, ${TINY.heads} heads (${TINY.kvHeads} KV), ` +
    `vocab ${TINY.vocab}, original context ${TINY.maxPositions}; weights from the workflow seed. A stand-in until ropeway pre-trains its own tiny model.`,
  materialize: (dir, ctx) =>
    Effect.gen(function* () {
      yield* Effect.try({
        try: () => writeRandomLlama(dir, { ...TINY, seed: ctx.seed }),
        catch: (e) => new StageError({ message: `tiny: cannot write the model: ${e instanceof Error ? e.message : String(e)}`, cause: e }),
      })
      yield* ctx.progress.log(`tiny: random-init (untrained) LLaMA written, seed ${ctx.seed}`)
    }),
}
