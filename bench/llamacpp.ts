/**
 * llama.cpp (CPU build, through the devDependency node-llama-cpp) as a reference runtime: scores token ids
 * in a GGUF file, for speed comparisons and cross-runtime conformance tests.
 */

export interface LlamaCppOptions {
  /** Flash attention in llama.cpp (its fast path); off for exact comparisons. */
  readonly flashAttention: boolean
  /** KV cache element type: "F16" is llama.cpp's default, "F32" for exact comparisons. */
  readonly kvType: "F16" | "F32"
  readonly threads?: number
}

export interface LlamaCppScore {
  /** ln p(tokens[i+1] | tokens[0..i]) for i < n−1. */
  readonly logprobs: Float64Array
  /** Wall time of the evaluation alone (model loading excluded). */
  readonly seconds: number
}

/** Tokens per evaluation call (scoreWithLlamaCpp). */
const EVALUATE_BLOCK = 1024

/** Scores `tokens` with probabilities at every position, as `ropeway score` does. */
export async function scoreWithLlamaCpp(ggufPath: string, tokens: readonly number[], options: LlamaCppOptions): Promise<LlamaCppScore> {
  // Imported here, not at the top: benches that do not compare with llama.cpp run where it is not installed
  // (scripts/gpu-check.sh carries no llama.cpp). Prebuilt binaries only: never a build or a download.
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp")
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: "never" })
  const model = await llama.loadModel({ modelPath: ggufPath })
  const contextSize = Math.max(256, tokens.length + 1)
  const context = await model.createContext({
    contextSize,
    batchSize: Math.min(contextSize, 2048),
    flashAttention: options.flashAttention,
    threads: options.threads ?? 2,
    experimentalKvCacheKeyType: options.kvType,
    experimentalKvCacheValueType: options.kvType,
  })
  try {
    const sequence = context.getSequence()
    // In blocks, each continuing the sequence: every position's probabilities come back as a Map over the
    // vocabulary, and a whole 8k sequence's over a 49k vocabulary would not fit in memory.
    const logprobs = new Float64Array(tokens.length - 1)
    let seconds = 0
    for (let from = 0; from < tokens.length; from += EVALUATE_BLOCK) {
      const input = tokens.slice(from, from + EVALUATE_BLOCK).map((t) => [t, { generateNext: { probabilities: true } }] as [number, { generateNext: { probabilities: true } }])
      const t0 = performance.now()
      const out = await sequence.controlledEvaluate(input as never)
      seconds += (performance.now() - t0) / 1000
      for (let j = 0; j < input.length && from + j + 1 < tokens.length; j++) {
        const p = out[j]?.next.probabilities?.get(tokens[from + j + 1] as never)
        if (p === undefined) throw new Error(`llama.cpp gave no probability for position ${from + j}`)
        logprobs[from + j] = Math.log(p)
      }
    }
    return { logprobs, seconds }
  } finally {
    await context.dispose()
    await model.dispose()
  }
}
