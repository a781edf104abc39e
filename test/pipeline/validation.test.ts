// Malformed workflow files: each gives a clear error with file, line, column and path, before anything runs.
import { describe, expect, test } from "bun:test"
import { Schema } from "effect"
import { defineStage, definePlugin, formatDiagnostic } from "../../pipeline/workflow/index.ts"
import { fixture, load, loadError, withBuiltins, yamlFile } from "./helpers.ts"

const expectOne = async (file: string, at: { line: number; column: number; path: string; message: string | RegExp }) => {
  const err = await loadError(file)
  expect(err.diagnostics.length).toBe(1)
  const d = err.diagnostics[0]!
  expect({ file: d.file, line: d.line, column: d.column, path: d.path }).toEqual({ file, line: at.line, column: at.column, path: at.path })
  if (typeof at.message === "string") expect(d.message).toContain(at.message)
  else expect(d.message).toMatch(at.message)
  // the message users see: one line per problem, `file:line:col: path: message`, no stack
  expect(err.message).toBe(formatDiagnostic(d))
  expect(err.message).not.toContain("    at ")
  return d
}

describe("workflow validation (fixtures)", () => {
  test("the good fixture loads, in dependency order", async () => {
    const wf = await load(fixture("good.yaml"))
    expect(wf.steps.map((s) => s.name)).toEqual(["two", "three", "total", "chain"])
    expect(wf.steps[2]!.inputs).toEqual({ a: { kind: "step", step: "two", output: "out" }, b: { kind: "step", step: "three", output: "out" } })
  })

  test("YAML syntax error", () =>
    expectOne(fixture("syntax-error.yaml"), { line: 7, column: 3, path: "", message: /^YAML syntax error: Flow map .* end with a \}$/ }))

  test("unknown stage lists the available ones", async () => {
    const d = await expectOne(fixture("unknown-stage.yaml"), {
      line: 9, column: 12, path: "steps.b.stage",
      message: `unknown stage "konst"; available: ${withBuiltins("stages", "chain", "const", "sum").join(", ")} (did you mean "const"?)`,
    })
    const available = d.message.match(/available: (.*) \(/)![1]!.split(", ")
    expect(available).toEqual(expect.arrayContaining(["chain", "const", "sum", "evaluate", "search", "report"]))
  })

  test("wrong parameter type, checked against the stage's Schema", () =>
    expectOne(fixture("bad-param.yaml"), { line: 8, column: 14, path: "steps.a.params.value", message: 'Expected number, got "two"' }))

  test("an artifact no step makes", () =>
    expectOne(fixture("missing-artifact.yaml"), { line: 12, column: 10, path: "steps.s.inputs.b", message: 'no step makes "nowhere.out"' }))

  test("a cycle", () => expectOne(fixture("cycle.yaml"), { line: 7, column: 18, path: "steps.a.inputs.a", message: "cycle: a -> b -> a" }))

  test("a plugin file that does not exist", () =>
    expectOne(fixture("missing-plugin.yaml"), { line: 5, column: 5, path: "plugins[1]", message: `plugin file not found: ${fixture("does-not-exist.ts")}` }))

  test("a plugin file that exports no plugin", () =>
    expectOne(fixture("no-plugin.yaml"), { line: 4, column: 5, path: "plugins[0]", message: "exports no plugin" }))
})

describe("workflow validation (inline)", () => {
  const head = "name: t\nseed: 1\nplugins: [TOY_PLUGIN]\n"

  const where = (d: { line: number; column: number; path: string; message: string }) => `${d.line}:${d.column} ${d.path}: ${d.message}`

  test("top level: unknown key, bad name, missing seed", async () => {
    const f = yamlFile("name: has space\nmodle: x\nsteps: {}\n")
    expect((await loadError(f)).diagnostics.map(where)).toEqual([
      '2:1 modle: unknown key "modle"; expected one of: name, seed, model, plugins, steps, cluster',
      "1:7 name: Expected a name of letters, digits, '.', '_' or '-' (it names the run folder), got has space",
      '1:1 seed: missing key "seed"',
    ])
  })

  test("several problems are all reported, each with its place", async () => {
    const f = yamlFile(`${head}steps:
  a:
    stage: const
    params: { value: 1, scale: 1.5, colour: red }
  b:
    stage: sum
    inputs: { a: a.out, c: a.out }
  c:
    stage: sum
    inputs: { a: a.out, b: a.nope }
`)
    expect((await loadError(f)).diagnostics.map(where)).toEqual([
      '7:37 steps.a.params.colour: unknown key "colour"',
      "7:32 steps.a.params.scale: Expected an integer, got 1.5",
      // no "no step makes a.out": step a exists, its own error above says what is wrong with it
      '10:25 steps.b.inputs.c: stage "sum" has no input "c"; its inputs: a, b',
      '10:13 steps.b.inputs: missing input "b" (a number artifact) for stage "sum"',
    ])
  })

  test("artifact kinds must match; references in ${steps.x.y} form; list form needs names", async () => {
    const kinds = definePlugin({
      name: "kinds",
      version: "1",
      stages: [defineStage({ name: "text", version: "1", params: Schema.Struct({}), outputs: { t: "text" }, run: () => Promise.reject() as never })],
    })
    const f = yamlFile(`${head}steps:
  - name: t
    stage: text
  - stage: const
    params: { value: 1 }
  - name: s
    stage: sum
    inputs:
      a: \${steps.t.t}
      b: t.t
`)
    expect((await loadError(f, { plugins: [kinds] })).diagnostics.map(where)).toEqual([
      "7:5 steps[1]: a step in a list needs `name: <step name>`",
      "12:10 steps[2].inputs.a: expected a number artifact, t.t is a text",
      "13:10 steps[2].inputs.b: expected a number artifact, t.t is a text",
    ])
  })

  test("a step input can name the workflow's model; an unknown model name is an error", async () => {
    const bad = yamlFile(`${head}model: no-such-model\nsteps:\n  a: { stage: const, params: { value: 1 } }\n`)
    const d = (await loadError(bad)).diagnostics
    expect(d.map((x) => `${x.line}:${x.column} ${x.path}`)).toEqual(["4:8 model"])
    expect(d[0]!.message).toContain('unknown model "no-such-model"')
    // a path that is missing is fine for loading (and `plan`), `run` refuses it
    const ok = yamlFile(`${head}model: ./weights/llama\nsteps:\n  a: { stage: const, params: { value: 1 } }\n`)
    const wf = await load(ok)
    expect(wf.model).toMatchObject({ kind: "path", spec: "./weights/llama", exists: false })
  })

  test("a missing workflow file", async () => {
    const err = await loadError("/nonexistent/wf.yaml")
    expect(err.message).toBe("/nonexistent/wf.yaml:1:1: workflow file not found or unreadable")
  })
})
