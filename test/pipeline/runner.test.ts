// The runner and the run store: cache keys, reuse, interruption and resume, the manifest.
import { describe, expect, test } from "bun:test"
import { Effect, Fiber, Layer, Schema } from "effect"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import {
  AdapterInfo, cacheKey, defineStage, definePlugin, layerCollect, layerSilent, planWorkflow, type ProgressEvent, runWorkflow, StageError,
} from "../../pipeline/workflow/index.ts"
import { artifactBytes, artifactHashes, builtinPluginInfos, fixture, load, readManifest, run, tempDir, yamlFile } from "./helpers.ts"

// Toy stages defined here: `emit` writes a file from its params, `add` sums its inputs. Counters show reuse.
const counts = { emit: 0, add: 0 }
const emit = defineStage({
  name: "emit",
  version: "1",
  params: Schema.Struct({ n: Schema.Int, label: Schema.optionalKey(Schema.String) }),
  outputs: { out: "number", dir: "folder" },
  run: (ctx) =>
    Effect.sync(() => {
      counts.emit++
      writeFileSync(ctx.outputs.out, `${ctx.params.n}`)
      require("node:fs").mkdirSync(join(ctx.outputs.dir, "sub"), { recursive: true })
      writeFileSync(join(ctx.outputs.dir, "sub", "label.txt"), ctx.params.label ?? "none")
      return { wrote: ctx.params.n }
    }),
})
const add = defineStage({
  name: "add",
  version: "1",
  params: Schema.Struct({}),
  inputs: { a: "number", b: "number" },
  outputs: { out: "number" },
  run: (ctx) =>
    Effect.sync(() => {
      counts.add++
      const n = (p: string) => Number(readFileSync(p, "utf8"))
      writeFileSync(ctx.outputs.out, `${n(ctx.inputs.a) + n(ctx.inputs.b)}`)
    }),
})
const fails = defineStage({
  name: "fails",
  version: "1",
  params: Schema.Struct({}),
  inputs: { x: "number" },
  outputs: { out: "number" },
  run: (ctx) =>
    Effect.gen(function* () {
      writeFileSync(ctx.outputs.out, "partial")
      return yield* new StageError({ message: "the loss diverged" })
    }),
})
const local = definePlugin({ name: "local", version: "2.0.0", stages: [emit, add, fails] })

const graph = (a: number, b: number, extra = "") => `name: sums
seed: 3
steps:
  a: { stage: emit, params: { n: ${a}, label: x } }
  b: { stage: emit, params: { label: y, n: ${b} } }
  s:
    stage: add
    inputs: { a: a.out, b: b.out }
${extra}`

const keys = async (yaml: string, store: string) => {
  const p = await Effect.runPromise(planWorkflow(await load(yamlFile(yaml), { plugins: [local] }), { store }))
  return Object.fromEntries(p.steps.map((s) => [s.name, { key: s.key, status: s.status }]))
}

describe("cache keys", () => {
  test("stable under key order, sensitive to every part", () => {
    const base = { stage: "s", version: "1", params: { x: 1, y: [1, 2], z: { b: 1, a: 2 } }, seed: 1, inputs: { m: "sha256:aa" } }
    const k = cacheKey(base)
    expect(k).toMatch(/^[0-9a-f]{32}$/)
    expect(cacheKey({ ...base, params: { z: { a: 2, b: 1 }, y: [1, 2], x: 1 } })).toBe(k)
    for (const changed of [
      { ...base, stage: "t" },
      { ...base, version: "2" },
      { ...base, params: { ...base.params, x: 2 } },
      { ...base, params: { ...base.params, y: [2, 1] } },
      { ...base, seed: 2 },
      { ...base, inputs: { m: "sha256:ab" } },
      { ...base, inputs: { n: "sha256:aa" } },
    ]) expect(cacheKey(changed)).not.toBe(k)
  })

  test("a changed param changes that step's key; a changed input artifact changes its consumers' keys", async () => {
    const store = tempDir()
    const k1 = await keys(graph(1, 2), store)
    expect(k1["a"]!.status).toBe("run")
    expect(k1["s"]).toEqual({ key: null, status: "pending" }) // its inputs are not made yet
    expect(await keys(graph(1, 2), store)).toEqual(k1) // stable across loads
    await run(await load(yamlFile(graph(1, 2)), { plugins: [local] }), store)
    const k2 = await keys(graph(1, 2), store)
    expect(Object.values(k2).map((s) => s.status)).toEqual(["cached", "cached", "cached"])
    expect(k2["a"]!.key).toBe(k1["a"]!.key!)

    // b: n 2 -> 3; a is untouched, b's key changes; s (once b is made) gets a new key from b's new content
    const k3 = await keys(graph(1, 3), store)
    expect(k3["a"]).toEqual(k2["a"]!)
    expect(k3["b"]!.key).not.toBe(k2["b"]!.key)
    expect(k3["b"]!.status).toBe("run")
    const r = await run(await load(yamlFile(graph(1, 3)), { plugins: [local] }), store)
    const s3 = r.manifest.steps.find((s) => s.name === "s")!
    expect(s3.key).not.toBe(k2["s"]!.key)
    expect(s3.status).toBe("done")
    // the seed is part of every key
    const k4 = await keys(graph(1, 3).replace("seed: 3", "seed: 4"), store)
    expect(k4["a"]!.key).not.toBe(k3["a"]!.key)
  })

  test("equal content from different params gives the consumer the same key (content-addressed inputs)", async () => {
    const store = tempDir()
    // a's label changes its folder output, not `out`; s only reads a.out, so its key is unchanged
    const r1 = await run(await load(yamlFile(graph(5, 6)), { plugins: [local] }), store)
    const r2 = await run(await load(yamlFile(graph(5, 6).replace("label: x", "label: z")), { plugins: [local] }), store)
    const st = (r: typeof r1, n: string) => r.manifest.steps.find((s) => s.name === n)!
    expect(st(r2, "a").status).toBe("done")
    expect(st(r2, "s").status).toBe("cached")
    expect(st(r2, "s").key).toBe(st(r1, "s").key)
  })
})

describe("runs", () => {
  test("a second run reuses every step and gives identical artifacts", async () => {
    const store = tempDir()
    const wf = await load(yamlFile(graph(10, 20)), { plugins: [local] })
    const before = { ...counts }
    const r1 = await run(wf, store)
    expect(counts).toEqual({ emit: before.emit + 2, add: before.add + 1 })
    expect(readFileSync(r1.manifest.steps[2]!.outputs["out"]!.path, "utf8")).toBe("30")
    const r2 = await run(wf, store)
    expect(counts).toEqual({ emit: before.emit + 2, add: before.add + 1 }) // nothing ran
    expect(r2.manifest.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached"])
    expect(r2.runDir).not.toBe(r1.runDir)
    expect(artifactBytes(r2.manifest)).toEqual(artifactBytes(r1.manifest))
    expect(artifactHashes(r2.manifest)).toEqual(artifactHashes(r1.manifest))
    // <run>/steps/<step> shows the artifacts
    expect(readFileSync(join(r2.runDir, "steps", "s", "out"), "utf8")).toBe("30")
    expect(readFileSync(join(r2.runDir, "steps", "a", "dir", "sub", "label.txt"), "utf8")).toBe("x")
  })

  test("manifest.json", async () => {
    const store = tempDir()
    const file = yamlFile(graph(1, 2))
    const wf = await load(file, { plugins: [local] })
    const events: ProgressEvent[] = []
    const r = await run(wf, store, Layer.merge(layerCollect(events), Layer.succeed(AdapterInfo, { adapter: "test adapter (fake)" })))
    const m = readManifest(r.runDir)
    expect(m).toEqual(r.manifest)
    const fileHash = `sha256:${new Bun.CryptoHasher("sha256").update(readFileSync(file)).digest("hex")}`
    expect(m).toMatchObject({
      format: 1,
      workflow: { name: "sums", file, hash: fileHash },
      seed: 3,
      model: null,
      adapter: "test adapter (fake)",
      store,
      status: "done",
    })
    // the built-ins first, then the caller's plugin
    expect(m.plugins).toEqual([...builtinPluginInfos(), { name: "local", version: "2.0.0", source: "embedded" }])
    expect(r.runDir.startsWith(join(store, "sums"))).toBe(true)
    const [a, b, s] = m.steps
    expect(a).toMatchObject({ name: "a", stage: "emit", version: "1", params: { label: "x", n: 1 }, seed: 3, status: "done", inputs: {}, result: { wrote: 1 }, error: null })
    expect(a!.key).toMatch(/^[0-9a-f]{32}$/)
    expect(a!.outputs["out"]).toEqual({ kind: "number", hash: `sha256:${new Bun.CryptoHasher("sha256").update("1").digest("hex")}`, path: join(store, "_store", a!.key!, "out", "out") })
    expect(a!.outputs["dir"]!.hash).toMatch(/^sha256-tree:/)
    // input hashes are the makers' output hashes
    expect(s!.inputs).toEqual({ a: { from: "a.out", hash: a!.outputs["out"]!.hash }, b: { from: "b.out", hash: b!.outputs["out"]!.hash } })
    for (const st of m.steps) {
      expect(Date.parse(st.startedAt!)).toBeLessThanOrEqual(Date.parse(st.finishedAt!))
      expect(st.seconds).toBeGreaterThanOrEqual(0)
    }
    expect(events.map((e) => e._tag)).toEqual(["StepStart", "StepDone", "StepStart", "StepDone", "StepStart", "StepDone", "RunEnd"])
    expect(events.at(-1)).toEqual({ _tag: "RunEnd", status: "done", ran: 3, cached: 0 })
    // the store entry records what made it
    const meta = JSON.parse(readFileSync(join(store, "_store", s!.key!, "meta.json"), "utf8"))
    expect(meta).toMatchObject({ key: s!.key, stage: "add", step: "s", inputs: { a: a!.outputs["out"]!.hash } })
  })

  test("a failing step: error names the step, nothing of it is committed, earlier steps stay", async () => {
    const store = tempDir()
    const wf = await load(yamlFile(graph(1, 2, "  f:\n    stage: fails\n    inputs: { x: s.out }\n")), { plugins: [local] })
    const r = await Effect.runPromise(Effect.result(runWorkflow(wf, { store, printRunDir: false }).pipe(Effect.provide(layerSilent))))
    if (r._tag === "Success") throw new Error("expected a failure")
    expect(r.failure.message).toStartWith('step "f" (stage fails) failed: the loss diverged\nrun folder: ')
    const m = readManifest(r.failure.runDir!)
    expect(m.status).toBe("failed")
    expect(m.steps.map((s) => s.status)).toEqual(["done", "done", "done", "failed"])
    expect(m.steps[3]!.error).toBe("the loss diverged")
    expect(readdirSync(join(store, "_store")).length).toBe(3)
    expect(readdirSync(join(store, "_tmp"))).toEqual([])
  })

  test("a step another live process is running is waited for, not run twice; a dead holder's claim is taken over", async () => {
    const store = tempDir()
    const wf = await load(yamlFile(graph(7, 8)), { plugins: [local] })
    const key = (await Effect.runPromise(planWorkflow(wf, { store }))).steps[0]!.key!
    const other = Bun.spawn(["sleep", "30"])
    require("node:fs").mkdirSync(join(store, "_locks"), { recursive: true })
    writeFileSync(join(store, "_locks", key), `${other.pid}`)
    const events: ProgressEvent[] = []
    const running = run(wf, store, layerCollect(events))
    await Bun.sleep(600)
    expect(existsSync(join(store, "_store", key))).toBe(false)
    expect(events.some((e) => e._tag === "Log" && e.line.startsWith(`waiting for process ${other.pid}, which is running this step`))).toBe(true)
    other.kill("SIGKILL")
    await other.exited
    const ok = await running
    expect(ok.manifest.status).toBe("done")
    expect(ok.manifest.steps[0]!.status).toBe("done")
    expect(readdirSync(join(store, "_locks"))).toEqual([])
  })

  test("a model folder that is missing fails at once; a present one is hashed into the keys", async () => {
    const store = tempDir()
    const dir = tempDir()
    const yaml = (extra: string) => `name: m\nseed: 1\nmodel: ./hf\n${extra}steps:\n  c:\n    stage: echo\n    inputs: { model: model }\n`
    const echo = defineStage({
      name: "echo", version: "1", params: Schema.Struct({}), inputs: { model: "model" }, outputs: { out: "text" },
      run: (ctx) => Effect.sync(() => writeFileSync(ctx.outputs.out, readFileSync(join(ctx.inputs.model, "config.json")))),
    })
    const plugin = definePlugin({ name: "e", version: "1", stages: [echo] })
    const wf = await load(yamlFile(yaml(""), dir), { plugins: [plugin] })
    const p = await Effect.runPromise(planWorkflow(wf, { store }))
    expect(p.problems).toEqual([`model folder not found: ${join(dir, "hf")}`])
    expect(p.steps[0]!.status).toBe("missing-input")
    const r = await Effect.runPromise(Effect.result(runWorkflow(wf, { store, printRunDir: false }).pipe(Effect.provide(layerSilent))))
    expect(r._tag === "Failure" && r.failure.message).toBe(`${wf.file}: model folder not found: ${join(dir, "hf")}`)

    require("node:fs").mkdirSync(join(dir, "hf"))
    writeFileSync(join(dir, "hf", "config.json"), '{"a":1}')
    const wf2 = await load(wf.file, { plugins: [plugin] })
    const r1 = await run(wf2, store)
    expect(r1.manifest.model).toEqual({ spec: "./hf", kind: "path", hash: expect.stringMatching(/^sha256-tree:/) })
    writeFileSync(join(dir, "hf", "config.json"), '{"a":2}')
    const r2 = await run(wf2, store)
    expect(r2.manifest.model!.hash).not.toBe(r1.manifest.model!.hash)
    expect(r2.manifest.steps[0]!.key).not.toBe(r1.manifest.steps[0]!.key)
    expect(r2.manifest.steps[0]!.status).toBe("done")
  })
})

const waitFor = async (cond: () => boolean, what: string, ms = 20_000) => {
  const t0 = Date.now()
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`)
    await Bun.sleep(10)
  }
}
/** The chain step's checkpoint round, once it has one. */
const checkpointRound = (store: string): number => {
  const dir = join(store, "_checkpoints")
  if (!existsSync(dir)) return 0
  for (const k of readdirSync(dir)) {
    const f = join(dir, k, "state.json")
    if (existsSync(f)) return (JSON.parse(readFileSync(f, "utf8")) as { i: number }).i
  }
  return 0
}

describe("interruption and resume (slow.yaml: 30 rounds of 40 ms, checkpointed)", () => {
  const reference = (async () => {
    const store = tempDir()
    return (await run(await load(fixture("slow.yaml")), store)).manifest
  })()

  test("Fiber.interrupt mid-step, then a re-run: same artifacts, the step resumes from its checkpoint", async () => {
    const store = tempDir()
    const wf = await load(fixture("slow.yaml"))
    const fiber = Effect.runFork(runWorkflow(wf, { store, printRunDir: false }).pipe(Effect.provide(layerSilent)))
    await waitFor(() => checkpointRound(store) >= 3, "3 rounds")
    await Effect.runPromise(Fiber.interrupt(fiber))
    const runs = readdirSync(join(store, "slow"))
    expect(runs.length).toBe(1)
    const m1 = readManifest(join(store, "slow", runs[0]!))
    expect(m1.status).toBe("interrupted")
    expect(m1.steps.map((s) => s.status)).toEqual(["done", "done", "done", "interrupted"])
    const chainKey = m1.steps[3]!.key!
    expect(existsSync(join(store, "_store", chainKey))).toBe(false) // partial output not committed
    expect(readdirSync(join(store, "_tmp"))).toEqual([]) // and removed
    expect(existsSync(join(store, "_checkpoints", chainKey, "state.json"))).toBe(true) // inner progress kept

    const r2 = await run(wf, store)
    expect(r2.manifest.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "done"])
    expect((r2.manifest.steps[3]!.result as { resumedFrom: number }).resumedFrom).toBeGreaterThanOrEqual(3)
    expect(artifactBytes(r2.manifest)).toEqual(artifactBytes(await reference))
    expect(existsSync(join(store, "_checkpoints", chainKey))).toBe(false) // dropped once committed
  })

  test("SIGKILL of a child process mid-step, then a re-run: same artifacts", async () => {
    const store = tempDir()
    const child = Bun.spawn([process.execPath, "cli/workflow-main.ts", fixture("slow.yaml"), "--store", store, "--quiet"], {
      cwd: join(import.meta.dirname, "../.."),
      stdout: "pipe",
      stderr: "pipe",
    })
    await waitFor(() => checkpointRound(store) >= 3, "3 rounds in the child")
    child.kill("SIGKILL")
    expect(await child.exited).not.toBe(0)
    expect(readdirSync(join(store, "_tmp")).length).toBe(1) // the killed step's temp folder is left behind...
    const r2 = await run(await load(fixture("slow.yaml")), store)
    expect(readdirSync(join(store, "_tmp"))).toEqual([]) // ...and swept by the next run
    expect(r2.manifest.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "done"])
    expect((r2.manifest.steps[3]!.result as { resumedFrom: number }).resumedFrom).toBeGreaterThanOrEqual(3)
    expect(artifactBytes(r2.manifest)).toEqual(artifactBytes(await reference))
    expect(artifactHashes(r2.manifest)).toEqual(artifactHashes(await reference))
  })

  test("SIGINT to `bun run workflow`: exit 130, manifest says interrupted, nothing partial committed", async () => {
    const store = tempDir()
    const child = Bun.spawn([process.execPath, "cli/workflow-main.ts", fixture("slow.yaml"), "--store", store, "--quiet"], {
      cwd: join(import.meta.dirname, "../.."),
      stdout: "pipe",
      stderr: "pipe",
    })
    await waitFor(() => checkpointRound(store) >= 2, "2 rounds in the child")
    child.kill("SIGINT")
    expect(await child.exited).toBe(130)
    const runs = readdirSync(join(store, "slow"))
    const m = readManifest(join(store, "slow", runs[0]!))
    expect(m.status).toBe("interrupted")
    expect(m.steps[3]!.status).toBe("interrupted")
    expect(readdirSync(join(store, "_tmp"))).toEqual([])
    expect(readdirSync(join(store, "_store")).length).toBe(3)
  })
})

describe("params and seeds in keys", () => {
  test("a param left to its schema default and the same value written out give one key; a step seed overrides", async () => {
    const withDefault = defineStage({
      name: "dflt", version: "1",
      params: Schema.Struct({ n: Schema.Int.pipe(Schema.withDecodingDefaultKey(Effect.succeed(5))) }),
      outputs: { out: "number" },
      run: (ctx) => Effect.sync(() => writeFileSync(ctx.outputs.out, `${ctx.params.n}`)),
    })
    const p = definePlugin({ name: "d", version: "1", stages: [withDefault] })
    const store = tempDir()
    const plan = async (yaml: string) =>
      (await Effect.runPromise(planWorkflow(await load(yamlFile(`name: d\nseed: 1\nsteps:\n${yaml}`), { plugins: [p] }), { store }))).steps
    const [implicit] = await plan("  a: { stage: dflt }\n")
    const [explicit] = await plan("  a: { stage: dflt, params: { n: 5 } }\n")
    const [other] = await plan("  a: { stage: dflt, params: { n: 6 } }\n")
    const [seeded] = await plan("  a: { stage: dflt, seed: 2, description: reseeded }\n")
    expect(implicit!.params).toEqual({ n: 5 })
    expect(explicit!.key).toBe(implicit!.key!)
    expect(other!.key).not.toBe(implicit!.key)
    expect(seeded!.seed).toBe(2)
    expect(seeded!.key).not.toBe(implicit!.key)
  })
})
