// A generating stand-in for a model's session in the evaluate stage's tests (passkeys, retrieval tasks): on
// a prompt's first feed it asks `answer` what to say, given the prompt's text (byte tokens) and the RoPE
// table it came under, then emits that text one byte per step (each step's log-probs put half the mass on
// it), then EOS. What the stage counts is then computable from the prompts alone.
import type { RopeTable } from "../../kernels/rope-table.ts"
import { BYTE_EOS, byteTokenizer } from "../../plugins/data/tokenizer.ts"
import type { LlamaSession } from "../../plugins/models/llama/model.ts"

export const scriptedSession = (
  vocabSize: number,
  capacity: number,
  answer: (prompt: string, table: RopeTable) => string | Promise<string>,
): LlamaSession => {
  let seq: number[] = []
  let plan = ""
  let promptLength = 0
  let table: RopeTable | undefined
  const next = (): Float64Array => {
    const at = seq.length - promptLength
    const out = new Float64Array(vocabSize).fill(Math.log(0.5 / (vocabSize - 1)))
    out[at < plan.length ? plan.charCodeAt(at) : BYTE_EOS] = Math.log(0.5)
    return out
  }
  return {
    get length() {
      return seq.length
    },
    capacity,
    get table() {
      return table
    },
    feed: async (tokens, t) => {
      if (seq.length === 0) {
        promptLength = tokens.length
        plan = await answer(byteTokenizer().decode(Array.from(tokens).filter((x) => x < 256)), t)
      }
      table = t
      seq = [...seq, ...tokens]
      if (seq.length > capacity) throw new Error("over capacity")
      return next()
    },
    rerotate: () => {},
    reset: () => {
      seq = []
    },
    dispose: () => {},
  }
}
