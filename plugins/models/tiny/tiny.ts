/**
 * The built-in model `tiny`: a byte-level LLaMA (vocab 258 = 256 bytes + BOS 256 + EOS 257, as
 * plugins/data's byteTokenizer) with an original context of 512 tokens, pre-trained by ropeway itself on
 * its synthetic long-range corpus until it retrieves passkeys inside its window.
 *
 * The weights ship beside this file (model.safetensors, f32, ~3.4 MB; config.json); workflows/tiny-pretrain.yaml
 * reproduces them on the same machine type, and README.md here records how they were made and what they
 * score. `materialize` copies both files into the step's folder after checking the weights' SHA-256, so
 * a damaged checkout fails loudly instead of giving different numbers.
 */
import { Effect } from "effect"
import { copyFileSync, mkdirSync, readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import type { ModelContribution } from "../../../pipeline/workflow/plugin.ts"
import { sha256 } from "../../../common/hash.ts"
import { StageError } from "../../../pipeline/workflow/stage.ts"

/** The folder holding the shipped config.json and model.safetensors. */
export const TINY_DIR = dirname(fileURLToPath(import.meta.url))
export const TINY_FILES = ["config.json", "model.safetensors"] as const
/** SHA-256 of model.safetensors: the model's identity (it is also the model's `version`). */
export const TINY_SHA256 = "54f880af2c76da93d5639301119ef31dc52cf239fb52b3163ac420afd4261907"
/** The original context L0. */
export const TINY_CONTEXT = 512

export const tinyModel: ModelContribution = {
  name: "tiny",
  version: `trained-${TINY_SHA256.slice(0, 16)}`,
  description:
    `byte-level LLaMA pre-trained by ropeway (workflows/tiny-pretrain.yaml): 4 layers, hidden 128, 4 heads (2 KV), ` +
    `vocab 258, original context ${TINY_CONTEXT}; retrieves passkeys inside its window (plugins/models/tiny/README.md)`,
  materialize: (dir, ctx) =>
    Effect.gen(function* () {
      yield* Effect.try({
        try: () => {
          const weights = join(TINY_DIR, "model.safetensors")
          const got = sha256(readFileSync(weights))
          if (got !== TINY_SHA256) throw new Error(`${weights}: SHA-256 ${got}, expected ${TINY_SHA256} (a damaged or partial checkout; git checkout -- ${weights})`)
          mkdirSync(dir, { recursive: true })
          for (const f of TINY_FILES) copyFileSync(join(TINY_DIR, f), join(dir, f))
        },
        catch: (e) => new StageError({ message: `tiny: cannot write the model: ${e instanceof Error ? e.message : String(e)}`, cause: e }),
      })
      yield* ctx.progress.log(`tiny: trained byte-level LLaMA (L0 ${TINY_CONTEXT}, sha256 ${TINY_SHA256.slice(0, 12)}) copied`)
    }),
}
