// The plugin API: plugins from a TS file and from an npm package, every kind of contribution, clashes.
import { describe, expect, test } from "bun:test"
import { Effect, Schema } from "effect"
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { getRopeMethod, ropeMethodNames } from "../../plugins/rope/index.ts"
import {
  defineStage, definePlugin, isPlugin, PluginRegistry, type SearchStrategy, StageError,
} from "../../pipeline/workflow/index.ts"
import {
  builtinNames, builtinPluginInfos, fixture, load, loadError, readManifest, run, tempDir, withBuiltins, yamlFile,
} from "./helpers.ts"

describe("plugins", () => {
  test("a plugin loaded from a TS file contributes stages that run", async () => {
    const wf = await load(fixture("good.yaml"))
    // the built-ins come first, then the file's plugins
    expect(builtinPluginInfos().length).toBeGreaterThan(0)
    expect(wf.plugins).toEqual([...builtinPluginInfos(), { name: "toy", version: "0.3.1", source: fixture("toy-plugin.ts") }])
    expect(builtinNames("stages")).toContain("evaluate")
    expect(wf.registry.names("stages")).toEqual(withBuiltins("stages", "chain", "const", "sum"))
    expect(wf.registry.stages.get("chain")!.plugin).toBe("toy")
    const r = await run(wf, tempDir())
    const m = readManifest(r.runDir)
    expect(m.plugins).toEqual(wf.plugins)
    expect(readFileSync(m.steps.find((s) => s.name === "total")!.outputs["out"]!.path, "utf8")).toBe("5")
    expect(m.steps.find((s) => s.name === "chain")!.outputs["trace"]!.hash).toMatch(/^sha256:/)
  })

  test("a plugin from an npm package, with the package's version in the manifest", async () => {
    const dir = tempDir()
    const pkg = join(dir, "node_modules", "ropeway-plugin-hello")
    mkdirSync(pkg, { recursive: true })
    // effect is a peer dependency of a plugin package: the one next to the workflow is this project's
    symlinkSync(join(import.meta.dirname, "../../node_modules/effect"), join(dir, "node_modules", "effect"), "dir")
    writeFileSync(join(pkg, "package.json"), JSON.stringify({ name: "ropeway-plugin-hello", version: "1.2.3", type: "module", main: "index.js" }))
    // JavaScript, as published packages are: Deno (like Node) strips no TypeScript inside node_modules
    writeFileSync(join(pkg, "index.js"), `
      import { Effect, Schema } from "effect"
      import { writeFileSync } from "node:fs"
      import { defineStage, definePlugin } from ${JSON.stringify(join(import.meta.dirname, "../../pipeline/workflow/index.ts"))}
      export const plugin = definePlugin({ name: "hello", version: "1.2.3", stages: [defineStage({
        name: "hello", version: "1", params: Schema.Struct({ who: Schema.String }), outputs: { greeting: "text" },
        run: (ctx) => Effect.sync(() => writeFileSync(ctx.outputs.greeting, "hello " + ctx.params.who)),
      })] })
    `)
    const wf = await load(yamlFile("name: h\nseed: 0\nplugins: [ropeway-plugin-hello]\nsteps:\n  g: { stage: hello, params: { who: bun } }\n", dir))
    expect(wf.plugins).toEqual([...builtinPluginInfos(), { name: "hello", version: "1.2.3", source: "ropeway-plugin-hello@1.2.3" }])
    const r = await run(wf, tempDir())
    expect(readFileSync(r.manifest.steps[0]!.outputs["greeting"]!.path, "utf8")).toBe("hello bun")

    const missing = yamlFile("name: h\nseed: 0\nplugins:\n  - ropeway-plugin-nope\nsteps:\n  g: { stage: hello }\n", dir)
    const d = (await loadError(missing)).diagnostics
    expect(d.map((x) => `${x.line}:${x.column} ${x.path}: ${x.message}`)).toEqual([
      '4:5 plugins[0]: plugin package "ropeway-plugin-nope" not found (install it next to the workflow file, or give a path)',
    ])
  })

  test("a plugin file that fails to import gives its first error line", async () => {
    const dir = tempDir()
    writeFileSync(join(dir, "broken.ts"), "throw new Error('no GPU here')\n")
    const d = (await loadError(yamlFile("name: b\nseed: 0\nplugins: [./broken.ts]\nsteps:\n  a: { stage: x }\n", dir))).diagnostics
    expect(d.map((x) => `${x.line}:${x.column} ${x.path}: ${x.message}`)).toEqual(["3:11 plugins[0]: plugin ./broken.ts failed to load: no GPU here"])
  })

  test("every kind of contribution is registered; RoPE methods go to the rope registry; stages see the registry", async () => {
    const strategy: SearchStrategy = { name: "coin-flip", description: "random", flip: (seed: number) => seed % 2 }
    const rope = { name: "test-identity-rope", resolve: getRopeMethod("default")!.resolve }
    const uses = defineStage({
      name: "uses-strategy",
      version: "1",
      params: Schema.Struct({ strategy: Schema.String }),
      outputs: { out: "text" },
      run: (ctx) =>
        Effect.gen(function* () {
          const reg = yield* PluginRegistry
          const s = reg.searchStrategies.get(ctx.params.strategy)?.value
          if (s === undefined) return yield* new StageError({ message: `no strategy ${ctx.params.strategy}` })
          writeFileSync(ctx.outputs.out, `${(s["flip"] as (n: number) => number)(ctx.seed)}`)
        }),
    })
    const tinyModel = {
      name: "toy-model",
      version: "3",
      materialize: (dir: string, ctx: { seed: number }) =>
        Effect.sync(() => {
          mkdirSync(dir)
          writeFileSync(join(dir, "config.json"), JSON.stringify({ seed: ctx.seed }))
        }),
    }
    const readModel = defineStage({
      name: "read-model", version: "1", params: Schema.Struct({}), inputs: { model: "model" }, outputs: { out: "text" },
      run: (ctx) => Effect.sync(() => writeFileSync(ctx.outputs.out, readFileSync(join(ctx.inputs.model, "config.json")))),
    })
    const p = definePlugin({
      name: "kinds", version: "0.1.0", stages: [uses, readModel], ropeMethods: [rope], searchStrategies: [strategy],
      fitness: [{ name: "ppl" }], datasets: [{ name: "pg19-mini" }], models: [tinyModel, { name: "llama" }],
    })
    expect(isPlugin(p)).toBe(true)
    expect(isPlugin({ name: "kinds", version: "1" })).toBe(false)
    const wf = await load(
      yamlFile("name: k\nseed: 5\nmodel: toy-model\nsteps:\n  u: { stage: uses-strategy, params: { strategy: coin-flip } }\n  r:\n    stage: read-model\n    inputs: { model: \"${model}\" }\n"),
      { plugins: [p] },
    )
    expect(ropeMethodNames()).toContain("test-identity-rope")
    expect(wf.plugins.filter((x) => x.source !== "builtin")).toEqual([{ name: "kinds", version: "0.1.0", source: "embedded" }])
    // each kind: the built-in baseline plus exactly this plugin's contribution
    expect(wf.registry.names("fitness")).toEqual(withBuiltins("fitness", "ppl"))
    expect(wf.registry.names("datasets")).toEqual(withBuiltins("datasets", "pg19-mini"))
    expect(wf.registry.names("searchStrategies")).toEqual(withBuiltins("searchStrategies", "coin-flip"))
    expect(wf.registry.names("stages")).toEqual(withBuiltins("stages", "read-model", "uses-strategy"))
    expect(wf.registry.names("models")).toEqual(withBuiltins("models", "llama", "toy-model"))
    expect(wf.registry.fitness.get("ppl")!.plugin).toBe("kinds")
    expect(wf.registry.datasets.get("pg19-mini")!.plugin).toBe("kinds")
    expect(wf.registry.searchStrategies.get("coin-flip")!.plugin).toBe("kinds")
    // the built-in model is made by a step of its own, cached like any other
    expect(wf.steps.map((s) => s.name)).toEqual(["model", "u", "r"])
    expect(wf.steps[0]).toMatchObject({ synthetic: true, stage: { name: "model:toy-model", version: "kinds@0.1.0/3" } })
    const r = await run(wf, tempDir())
    expect(r.manifest.model).toEqual({ spec: "toy-model", kind: "builtin", hash: null })
    expect(readFileSync(r.manifest.steps[1]!.outputs["out"]!.path, "utf8")).toBe("1")
    expect(readFileSync(r.manifest.steps[2]!.outputs["out"]!.path, "utf8")).toBe('{"seed":5}')
    expect(r.manifest.steps[2]!.inputs["model"]!.from).toBe("model.model")

    // a model family (no materialize) can't be the workflow's model
    const fam = yamlFile("name: k\nseed: 5\nmodel: llama\nsteps:\n  u: { stage: uses-strategy, params: { strategy: coin-flip } }\n")
    expect((await loadError(fam, { plugins: [p] })).message).toEndWith(':3:8: model: model "llama" is a model family, not a model: give a path to a Hugging Face folder')
  })

  test("two plugins defining the same stage: an error at the second plugin", async () => {
    const dir = tempDir()
    writeFileSync(join(dir, "dup.ts"), `
      import { definePlugin } from ${JSON.stringify(join(import.meta.dirname, "../../pipeline/workflow/index.ts"))}
      import toy from ${JSON.stringify(fixture("toy-plugin.ts"))}
      export default definePlugin({ name: "dup", version: "1", stages: [toy.stages![0]!] })
    `)
    const f = yamlFile(`name: d\nseed: 0\nplugins:\n  - ${fixture("toy-plugin.ts")}\n  - ./dup.ts\nsteps:\n  a: { stage: const, params: { value: 1 } }\n`, dir)
    expect((await loadError(f)).diagnostics.map((x) => `${x.line}:${x.column} ${x.path}: ${x.message}`)).toEqual([
      '5:5 plugins[1]: plugin "dup" defines stage "const", already defined by plugin "toy"',
    ])
  })
})
