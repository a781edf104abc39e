/**
 * Bad input to `ropeway score`: one line on stderr, `error: <file>: <problem>`, exit code ≠ 0, no stack.
 */
import { afterAll, describe, expect, test } from "bun:test"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { runCli, ownStderr } from "./cli-helpers.ts"
import { type RandomModelOptions, removeDir, tempDir, writeConfigAndWeights, writeRandomModel } from "./random-model.ts"

const root = tempDir("ropeway-errors-")
afterAll(() => removeDir(root))

const small: RandomModelOptions = { hidden: 32, layers: 1, heads: 2, kvHeads: 1, intermediate: 48, vocab: 40, seed: 21 }
const good = join(root, "good")
writeRandomModel(good, small)
const tokens = join(root, "tokens.json")
writeFileSync(tokens, JSON.stringify([1, 2, 3, 4]))

function file(name: string, content: string): string {
  const p = join(root, name)
  writeFileSync(p, content)
  return p
}

/** A copy of the small model with one tensor replaced (shape and/or dtype). */
function modelWith(name: string, tensor: string, change: { shape?: number[]; dtype?: "I32" }): string {
  const dir = join(root, name)
  const rm = writeRandomModel(dir, small)
  const tensors = new Map(rm.tensors)
  const t = tensors.get(tensor)!
  if (change.shape !== undefined) {
    const n = change.shape.reduce((a, b) => a * b, 1)
    tensors.set(tensor, { shape: change.shape, data: new Float64Array(n).fill(0.5) })
  }
  writeConfigAndWeights(dir, rm.config, tensors, (n) => (n === tensor && change.dtype !== undefined ? change.dtype : "F32"))
  void t
  return dir
}

function modelWithConfig(name: string, patch: (c: Record<string, unknown>) => Record<string, unknown>): string {
  const dir = join(root, name)
  const rm = writeRandomModel(dir, small)
  writeFileSync(join(dir, "config.json"), JSON.stringify(patch({ ...rm.config })))
  return dir
}

/** Runs score and checks the one-line error contract; returns the line. */
async function expectError(args: string[], ...mentions: string[]): Promise<string> {
  const r = await runCli(["score", ...args])
  const err = ownStderr(r.stderr)
  expect(r.code).not.toBe(0)
  expect(err.split("\n")).toHaveLength(1)
  expect(err.startsWith("error: ")).toBe(true)
  expect(err).not.toMatch(/\n\s+at |\.ts:\d+/)
  for (const m of mentions) expect(err).toContain(m)
  expect(r.stdout).toBe("")
  return err
}

describe("score: bad input is one line naming the file and the problem", () => {
  test("missing model folder", async () => {
    const dir = join(root, "no-such-folder")
    await expectError(["--model", dir, "--tokens", tokens], dir, "does not exist")
  })

  test("missing config.json", async () => {
    const dir = join(root, "empty")
    mkdirSync(dir, { recursive: true })
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "config.json"), "not found")
  })

  test("malformed config.json", async () => {
    const dir = join(root, "malformed")
    writeRandomModel(dir, small)
    writeFileSync(join(dir, "config.json"), '{"architectures": ["LlamaForCausalLM"], "hidden_size": 32,')
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "config.json"), "malformed JSON")
  })

  test("missing field", async () => {
    const dir = modelWithConfig("nofield", (c) => {
      delete c["num_attention_heads"]
      return c
    })
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "config.json"), "num_attention_heads")
  })

  test("unsupported architecture", async () => {
    const dir = modelWithConfig("gpt2", (c) => ({ ...c, architectures: ["GPT2LMHeadModel"] }))
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "config.json"), "GPT2LMHeadModel", "LlamaForCausalLM", "Phi3ForCausalLM")
  })

  test("bad rope_scaling in config.json", async () => {
    const dir = modelWithConfig("badrope", (c) => ({ ...c, rope_scaling: { rope_type: "linear", factor: -1 } }))
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "config.json"), "rope_scaling", "factor")
  })

  test("an input longer than Mistral's sliding window", async () => {
    const dir = join(root, "window")
    writeRandomModel(dir, { ...small, arch: "MistralForCausalLM", configPatch: { sliding_window: 3 } })
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "config.json"), "sliding_window 3")
  })

  test("a tensor with the wrong shape", async () => {
    const dir = modelWith("badshape", "model.layers.0.self_attn.k_proj.weight", { shape: [32, 32] })
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "model.safetensors"), "model.layers.0.self_attn.k_proj.weight", "[32, 32]", "expected [16, 32]")
  })

  test("a tensor with the wrong dtype", async () => {
    const dir = modelWith("baddtype", "model.norm.weight", { dtype: "I32" })
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "model.safetensors"), "model.norm.weight", "I32")
  })

  test("a missing tensor in a sharded checkpoint", async () => {
    const dir = join(root, "sharded")
    const rm = writeRandomModel(dir, { ...small, shards: 2 })
    const tensors = new Map(rm.tensors)
    tensors.delete("model.layers.0.mlp.up_proj.weight")
    writeConfigAndWeights(dir, rm.config, tensors, "F32", 2)
    await expectError(["--model", dir, "--tokens", tokens], join(dir, "model.safetensors.index.json"), "model.layers.0.mlp.up_proj.weight", "missing")
  })

  test("a truncated safetensors file", async () => {
    const dir = join(root, "truncated")
    writeRandomModel(dir, small)
    const path = join(dir, "model.safetensors")
    const bytes = readFileSync(path)
    writeFileSync(path, bytes.subarray(0, bytes.length - 100))
    await expectError(["--model", dir, "--tokens", tokens], path, "data_offsets")
  })

  test("a token id outside the vocabulary", async () => {
    const bad = file("oov.json", JSON.stringify([1, 2, 40, 3]))
    await expectError(["--model", good, "--tokens", bad], bad, "token 40 at index 2", "vocab_size 40")
  })

  test("a tokens file that is not a JSON array of integers", async () => {
    for (const [name, content] of [
      ["obj.json", '{"ids": [1, 2]}'],
      ["float.json", "[1, 2.5, 3]"],
      ["str.json", '[1, "2"]'],
      ["broken.json", "[1, 2"],
    ] as const) {
      const p = file(name, content)
      await expectError(["--model", good, "--tokens", p], p, "not a JSON array of integers")
    }
  })

  test("a missing tokens file", async () => {
    const p = join(root, "nope.json")
    await expectError(["--model", good, "--tokens", p], p, "not found")
  })

  test("bad --rope-scaling", async () => {
    await expectError(["--model", good, "--tokens", tokens, "--rope-scaling", "{factor: 2"], "--rope-scaling", "malformed JSON")
    await expectError(["--model", good, "--tokens", tokens, "--rope-scaling", '{"rope_type": "nonsense"}'], "--rope-scaling", "nonsense")
  })

  test("--text without tokenizer.json", async () => {
    const text = file("text.txt", "hello world")
    await expectError(["--model", good, "--text", text], join(good, "tokenizer.json"), "not found")
  })
})
