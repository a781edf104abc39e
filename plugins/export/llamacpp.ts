/**
 * llama.cpp as a second runtime for export checks: log-probabilities of token ids in a GGUF file, with the
 * context size under our control (llama.cpp picks LongRoPE's long or short factors by the context it
 * allocates, not by the input). node-llama-cpp is a devDependency, so it is imported lazily and its absence
 * is reported, not thrown at import time.
 */

export interface LlamaCppScoreOptions {
  /** Context to allocate (llama.cpp rounds it up to a multiple of 256); default tokens.length. */
  readonly contextSize?: number
  readonly threads?: number
}

/** The context size per sequence llama.cpp will actually use for a requested size (src/llama-context.cpp pads to 256). */
export const llamaCppContext = (requested: number): number => Math.ceil(requested / 256) * 256

/** True when node-llama-cpp can be imported here. */
export async function llamaCppAvailable(): Promise<boolean> {
  try {
    await import("node-llama-cpp")
    return true
  } catch {
    return false
  }
}

/**
 * ln p(tokens[i+1] | tokens[..i]) for i < n−1, from llama.cpp's CPU build with an F32 KV cache and no flash
 * attention (its exact path).
 */
export async function llamaCppLogprobs(ggufPath: string, tokens: readonly number[], options: LlamaCppScoreOptions = {}): Promise<Float64Array> {
  const { getLlama, LlamaLogLevel } = await import("node-llama-cpp")
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error })
  const model = await llama.loadModel({ modelPath: ggufPath })
  const contextSize = Math.max(options.contextSize ?? tokens.length, tokens.length)
  try {
    const context = await model.createContext({
      contextSize,
      batchSize: Math.min(contextSize, 512),
      flashAttention: false,
      threads: options.threads ?? 2,
      experimentalKvCacheKeyType: "F32",
      experimentalKvCacheValueType: "F32",
    })
    try {
      const sequence = context.getSequence()
      const input = tokens.map((t) => [t, { generateNext: { probabilities: true } }] as const)
      const out = await sequence.controlledEvaluate(input as never)
      const logprobs = new Float64Array(tokens.length - 1)
      for (let i = 0; i + 1 < tokens.length; i++) {
        const p = (out[i] as { next?: { probabilities?: Map<number, number> } } | undefined)?.next?.probabilities?.get(tokens[i + 1]!)
        if (p === undefined) throw new Error(`llama.cpp gave no probability for position ${i}`)
        logprobs[i] = Math.log(p)
      }
      return logprobs
    } finally {
      await context.dispose()
    }
  } finally {
    await model.dispose()
  }
}
