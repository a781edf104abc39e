/**
 * Tokenizers behind one small interface: the built-in byte-level one (for the tiny model ropeway trains
 * itself) and Hugging Face `tokenizer.json` files through @huggingface/tokenizers.
 *
 * `encode` never adds special tokens: the packer and the prompt builders place BOS/EOS themselves, so the
 * same code serves every tokenizer. Use `withBos` for "what the model sees at the start of an input".
 */
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers"
import { InputError, inputError } from "../../common/errors.ts"

export interface TextTokenizer {
  /** "byte" or the folder the tokenizer came from, for logs and manifests. */
  readonly name: string
  /** One past the largest id the tokenizer can produce. */
  readonly vocabSize: number
  /** Undefined where the model has none (e.g. Qwen has no BOS): callers then add nothing. */
  readonly bos: number | undefined
  readonly eos: number | undefined
  readonly pad?: number
  /** Text to ids, without special tokens. */
  encode(text: string): number[]
  /** Ids to text; special tokens are dropped. */
  decode(ids: readonly number[]): string
}

/** `[bos, ...ids]`, or `ids` when the tokenizer has no BOS. */
export const withBos = (tok: TextTokenizer, ids: readonly number[]): number[] =>
  tok.bos === undefined ? [...ids] : [tok.bos, ...ids]

// ---------------------------------------------------------------------------------------------------
// Byte-level

/** Byte-level vocabulary: ids 0–255 are the UTF-8 bytes, 256 is BOS, 257 is EOS; 258 ids, no PAD. */
export const BYTE_BOS = 256
export const BYTE_EOS = 257
export const BYTE_VOCAB_SIZE = 258

const utf8Encoder = new TextEncoder()

/** Exact on any string: decode(encode(s)) === s for every well-formed UTF-16 string. */
export const byteTokenizer = (): TextTokenizer => ({
  name: "byte",
  vocabSize: BYTE_VOCAB_SIZE,
  bos: BYTE_BOS,
  eos: BYTE_EOS,
  encode: (text) => Array.from(utf8Encoder.encode(text)),
  decode: (ids) => {
    const bytes: number[] = []
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= BYTE_VOCAB_SIZE) throw new RangeError(`byte tokenizer: id ${id} out of range`)
      if (id < 256) bytes.push(id)
    }
    // Not fatal on a cut multi-byte character: generated text can end mid-character.
    return new TextDecoder("utf-8").decode(new Uint8Array(bytes))
  },
})

// ---------------------------------------------------------------------------------------------------
// Hugging Face tokenizer.json

/** A special token in tokenizer_config.json is a string or an AddedToken object `{content: ...}`. */
const tokenText = (v: unknown): string | undefined => {
  if (typeof v === "string") return v
  if (typeof v === "object" && v !== null && typeof (v as { content?: unknown }).content === "string")
    return (v as { content: string }).content
  return undefined
}

const readJson = (file: string): unknown => {
  let text: string
  try {
    text = readFileSync(file, "utf8")
  } catch (e) {
    throw inputError(file, `cannot read: ${(e as Error).message}`)
  }
  try {
    return JSON.parse(text)
  } catch (e) {
    throw inputError(file, `invalid JSON: ${(e as Error).message}`)
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

/**
 * Token ids must be integers from 0 that run (nearly) densely: the tokenizer library keeps its vocabulary
 * in an array indexed by id, so one absurd id would make every vocabulary walk billions of steps long.
 */
const checkIds = (json: Record<string, unknown>, model: Record<string, unknown>, file: string): void => {
  const ids: [string, unknown][] = []
  if (isObject(model.vocab)) for (const [token, id] of Object.entries(model.vocab)) ids.push([`model.vocab[${JSON.stringify(token)}]`, id])
  if (Array.isArray(json.added_tokens)) json.added_tokens.forEach((t, i) => ids.push([`added_tokens[${i}].id`, isObject(t) ? t.id : undefined]))
  const limit = 2 * ids.length + 1024 + (Array.isArray(model.vocab) ? model.vocab.length : 0)
  for (const [where, id] of ids) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= limit) {
      throw inputError(file, `${where}: expected a token id from 0 up to about the ${ids.length} tokens listed, got ${JSON.stringify(id)?.slice(0, 40)}`)
    }
  }
}

/** Any error of the tokenizer library, as an InputError naming the file. */
const guarded = <A>(file: string, what: string, f: () => A): A => {
  try {
    return f()
  } catch (e) {
    throw e instanceof InputError ? e : inputError(file, `${what}: ${(e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ")}`)
  }
}

/**
 * Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a model folder.
 * BOS/EOS/PAD come from the config's bos_token/eos_token/pad_token; without a config, BOS is the id the
 * file's post-processor puts in front of a text (if any) and EOS the first of the usual end tokens present.
 */
export const loadHfTokenizer = (dir: string): TextTokenizer => {
  const file = join(dir, "tokenizer.json")
  if (!existsSync(file)) throw inputError(file, "not found (a Hugging Face tokenizer.json is expected in the model folder)")
  const json = readJson(file)
  if (!isObject(json) || !isObject(json.model)) throw inputError(file, "not a tokenizer.json: no \"model\" object")
  checkIds(json, json.model, file)
  const configFile = join(dir, "tokenizer_config.json")
  const config = existsSync(configFile) ? readJson(configFile) : {}
  if (!isObject(config)) throw inputError(configFile, "expected a JSON object")

  const tok = guarded(file, "cannot build the tokenizer", () => new HfTokenizer(json, config))

  const idOf = (key: string): number | undefined => {
    const text = tokenText(config[key])
    if (text === undefined) return undefined
    const id = tok.token_to_id(text)
    if (id === undefined) throw inputError(configFile, `${key} ${JSON.stringify(text)} is not in the vocabulary`)
    return id
  }
  const prefixId = (): number | undefined => {
    // What the post-processor adds in front: compare the encodings with and without special tokens.
    const plain = tok.encode("a", { add_special_tokens: false }).ids
    const full = tok.encode("a", { add_special_tokens: true }).ids
    return full.length > plain.length && full[0] !== plain[0] ? full[0] : undefined
  }
  const firstKnown = (names: readonly string[]): number | undefined => {
    for (const n of names) {
      const id = tok.token_to_id(n)
      if (id !== undefined) return id
    }
    return undefined
  }

  const { bos, eos, pad, maxId } = guarded(file, "cannot use the tokenizer", () => {
    let maxId = -1
    for (const id of tok.get_vocab(true).values()) if (id > maxId) maxId = id
    return {
      bos: "bos_token" in config ? idOf("bos_token") : prefixId(),
      eos: "eos_token" in config ? idOf("eos_token") : firstKnown(["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"]),
      pad: idOf("pad_token"),
      maxId,
    }
  })

  const base = {
    name: dir,
    vocabSize: maxId + 1,
    bos,
    eos,
    encode: (text: string) => guarded(file, "cannot encode", () => tok.encode(text, { add_special_tokens: false }).ids),
    // decode([]) throws in the library; cleanup off so round trips are byte-exact.
    decode: (ids: readonly number[]) =>
      ids.length === 0 ? "" : guarded(file, "cannot decode", () => tok.decode([...ids], { skip_special_tokens: true, clean_up_tokenization_spaces: false })),
  }
  return pad === undefined ? base : { ...base, pad }
}

/** `"byte"` for the built-in byte-level tokenizer, otherwise a model folder holding tokenizer.json. */
export const loadTokenizer = (spec: string): TextTokenizer => (spec === "byte" ? byteTokenizer() : loadHfTokenizer(spec))
