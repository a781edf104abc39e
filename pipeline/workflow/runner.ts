/**
 * The runner: steps in order; a step whose cache key is stored is reused, otherwise its stage runs into a
 * temp folder that is renamed into the store only on success. Interruption (Ctrl-C, Fiber.interrupt)
 * removes the running step's temp folder and keeps its checkpoint folder, so a re-run resumes.
 *
 * The store is trusted only as far as it checks out (verify.ts): a reused entry's files must still
 * match their records (size, mtime, inode; re-hashed when those moved), and a step about to run re-hashes
 * its inputs in full first. An entry that fails is moved aside with a one-line warning naming the file,
 * and recomputed; a step whose input fails re-runs the step that made it. While another process runs a
 * step, this run waits for it and then reuses its result.
 */
import { Cause, Context, Data, Effect, Exit, Option } from "effect"
import { existsSync, mkdirSync, symlinkSync } from "node:fs"
import { join, relative } from "node:path"
import { formatDiagnostic } from "./diagnostics.ts"
import { writeFileAtomic } from "../../common/files.ts"
import type { InputSource, ResolvedStep, Workflow } from "./loader.ts"
import { type Holder, isAlive, readHolder, thisProcess } from "./lock.ts"
import { PluginRegistry } from "./plugin.ts"
import { Progress, type ProgressEvent } from "./progress.ts"
import type { RopewayError } from "../../common/errors.ts"
import type { Json, StageContext } from "./stage.ts"
import { cacheKey, type EntryMeta, type OutputRecord, removeTree, RunStore } from "./store.ts"
import { checkEntry, describeMismatches, type Mismatch } from "./verify.ts"

/** The GPU adapter (or any other machine description) for the manifest, when a service provides one. */
export class AdapterInfo extends Context.Service<AdapterInfo, { readonly adapter: string }>()("ropeway/AdapterInfo") {}

export class RunError extends Data.TaggedError("RunError")<{
  readonly message: string
  readonly runDir: string | undefined
}> {}

export type StepStatus = "pending" | "running" | "done" | "cached" | "failed" | "interrupted"

export interface StepManifest {
  readonly name: string
  readonly stage: string
  readonly version: string
  readonly params: unknown
  readonly seed: number
  key: string | null
  /** Input name -> where from and its content hash. */
  inputs: Record<string, { readonly from: string; readonly hash: string }>
  outputs: Record<string, OutputRecord & { readonly path: string }>
  status: StepStatus
  startedAt: string | null
  finishedAt: string | null
  seconds: number | null
  result: Json | null
  error: string | null
}

export interface Manifest {
  readonly format: 1
  readonly workflow: { readonly name: string; readonly file: string; readonly hash: string }
  readonly seed: number
  readonly model: { readonly spec: string; readonly kind: string; hash: string | null } | null
  readonly plugins: ReadonlyArray<{ readonly name: string; readonly version: string; readonly source: string }>
  readonly adapter: string | null
  readonly store: string
  /** The process that ran it: a "running" manifest whose process is gone was killed (`ropeway runs`). */
  readonly process: Holder
  status: "running" | "done" | "failed" | "interrupted"
  readonly startedAt: string
  finishedAt: string | null
  readonly steps: StepManifest[]
  /** One line each: store entries found changed and set aside, inputs re-hashed. */
  readonly warnings: string[]
}

export interface RunOptions {
  /** The store folder; `runs` by default. */
  readonly store?: string
  /** Print the run folder as the last line on stdout (default true). */
  readonly printRunDir?: boolean
}

export interface RunResult {
  readonly runDir: string
  readonly manifest: Manifest
}

export const describeSource = (s: InputSource): string => (s.kind === "step" ? `${s.step}.${s.output}` : s.path)

/** Input hashes of a step from what earlier steps made; undefined where a maker has not run yet. */
export const inputHashes = (
  step: ResolvedStep,
  made: ReadonlyMap<string, OutputRecord & { readonly path: string }>,
  external: (path: string) => string,
): Record<string, { from: string; hash: string; path: string }> | undefined => {
  const out: Record<string, { from: string; hash: string; path: string }> = {}
  for (const [name, src] of Object.entries(step.inputs)) {
    if (src.kind === "path") out[name] = { from: src.path, hash: external(src.path), path: src.path }
    else {
      const m = made.get(`${src.step}.${src.output}`)
      if (m === undefined) return undefined
      out[name] = { from: `${src.step}.${src.output}`, hash: m.hash, path: m.path }
    }
  }
  return out
}

export const stepKey = (step: ResolvedStep, hashes: Record<string, { hash: string }>): string =>
  cacheKey({
    stage: step.stage.name,
    version: step.stage.version,
    params: step.paramsJson,
    seed: step.seed,
    inputs: Object.fromEntries(Object.entries(hashes).map(([k, v]) => [k, v.hash])),
  })

/** The workflow's plugin settings (`cluster:`), each wrapping a step's Effect as its plugin says. */
const withSettings = (wf: Workflow) => <A, E>(self: Effect.Effect<A, E>): Effect.Effect<A, E | RopewayError> =>
  Object.entries(wf.settings).reduce<Effect.Effect<A, E | RopewayError>>(
    (eff, [key, value]) => wf.registry.settings.get(key)!.value.provide(value)(eff) as Effect.Effect<A, E | RopewayError>,
    self,
  )

const stamp = (d: Date): string => d.toISOString().replace(/[-:]/g, "").replace(/\.(\d+)Z$/, "-$1Z").replace("T", "-")

const errorText = (cause: Cause.Cause<unknown>): string => {
  const e = Cause.squash(cause)
  return e instanceof Error ? e.message : String(e)
}

/** How often a run waiting for another process's step looks at its lock. */
const WAIT_POLL_MS = 200
/** A step whose inputs keep failing their checks (a file changing under the run) gives up after this many rounds. */
const MAX_ROUNDS = 4

type Hashes = Record<string, { from: string; hash: string; path: string }>

/** What the parts of one run share: its workflow, store, folder, manifest and the outputs made so far. */
interface Run {
  readonly wf: Workflow
  readonly store: RunStore
  readonly progress: { readonly emit: (event: ProgressEvent) => Effect.Effect<void> }
  readonly runDir: string
  readonly manifest: Manifest
  readonly made: Map<string, OutputRecord & { readonly path: string }>
  readonly stepIndex: ReadonlyMap<string, number>
}

const writeManifest = (run: Run) => writeFileAtomic(join(run.runDir, "manifest.json"), `${JSON.stringify(run.manifest, null, 2)}\n`)
const save = (run: Run) => Effect.sync(() => writeManifest(run))
/** On the way out of a failure (a full disk, maybe): the failure itself is what the user must see. */
const saveIfPossible = (run: Run) =>
  Effect.sync(() => {
    try {
      writeManifest(run)
    } catch {
      // the run's error names what went wrong
    }
  })

const warn = (run: Run, line: string) =>
  Effect.suspend(() => {
    run.manifest.warnings.push(line)
    return run.progress.emit({ _tag: "Warning", line })
  })

/** A new run folder and its manifest, written before any step runs. */
const openRun = (wf: Workflow, store: RunStore, progress: Run["progress"], adapter: Option.Option<{ readonly adapter: string }>) =>
  Effect.gen(function* () {
    const started = new Date()
    let runDir = join(store.root, wf.name, stamp(started))
    for (let n = 2; existsSync(runDir); n++) runDir = join(store.root, wf.name, `${stamp(started)}-${n}`)
    mkdirSync(runDir, { recursive: true })
    const manifest: Manifest = {
      format: 1,
      workflow: { name: wf.name, file: wf.file, hash: wf.hash },
      seed: wf.seed,
      model: wf.model.kind === "none" ? null : { spec: wf.model.kind === "path" ? wf.model.spec : wf.model.name, kind: wf.model.kind, hash: null },
      plugins: wf.plugins,
      adapter: Option.match(adapter, { onNone: () => null, onSome: (a) => a.adapter }),
      store: store.root,
      process: thisProcess(),
      status: "running",
      startedAt: started.toISOString(),
      finishedAt: null,
      steps: wf.steps.map((s) => ({
        name: s.name, stage: s.stage.name, version: s.stage.version, params: s.paramsJson, seed: s.seed,
        key: null, inputs: {}, outputs: {}, status: "pending", startedAt: null, finishedAt: null, seconds: null, result: null, error: null,
      })),
      warnings: [],
    }
    const run: Run = { wf, store, progress, runDir, manifest, made: new Map(), stepIndex: new Map(wf.steps.map((s, i) => [s.name, i])) }
    yield* Effect.try({ try: () => writeManifest(run), catch: (e) => new RunError({ message: e instanceof Error ? e.message : String(e), runDir }) })
    return run
  })

/** An external input's hash; the model folder's also goes into the manifest. */
const external = (run: Run) => (path: string): string => {
  const h = run.store.hashExternal(path)
  if (run.manifest.model !== null && run.wf.model.kind === "path" && path === run.wf.model.path) run.manifest.model.hash = h
  return h
}

/** Sets an entry aside with a warning; a store where that fails refuses the run, naming the file. */
const quarantine = (run: Run, key: string, step: string, ms: readonly Mismatch[]) =>
  Effect.gen(function* () {
    const where = yield* Effect.try({
      try: () => run.store.quarantine(key),
      catch: (e) => new Error(`${describeMismatches(ms)}; its store entry ${key} cannot be moved aside: ${e instanceof Error ? e.message : String(e)}`),
    })
    yield* warn(run, `${describeMismatches(ms)}: store entry ${key} (step "${step}") moved to ${where}; recomputing it`)
  })

/** The committed entry for `key` if it checks out (cheaply); a damaged one is quarantined. */
const reusable = (run: Run, key: string, step: string) =>
  Effect.gen(function* () {
    if (!existsSync(run.store.entryDir(key))) return undefined
    const c = checkEntry(run.store, key, "stat")
    if (c.mismatches.length > 0 || c.meta === undefined) {
      yield* quarantine(run, key, step, c.mismatches)
      return undefined
    }
    return c.restamp === undefined ? c.meta : run.store.restamp(c.meta, c.restamp)
  })

/** Waits while a live process other than this one holds `key`'s lock. */
const waitForHolder = (run: Run, key: string, step: string, holder: Holder) =>
  Effect.gen(function* () {
    yield* run.progress.emit({ _tag: "Log", step, line: `waiting for process ${holder.pid}, which is running this step (lock ${run.store.lockPath(key)})` })
    for (;;) {
      const h = readHolder(run.store.lockPath(key))
      if (h === undefined || !isAlive(h)) return
      yield* Effect.sleep(WAIT_POLL_MS)
    }
  })

/** Records a step's committed entry: its outputs for later steps, the manifest, a link in the run folder. */
const record = (run: Run, step: ResolvedStep, m: StepManifest, key: string, meta: EntryMeta) => {
  for (const [name, o] of Object.entries(meta.outputs)) {
    const rec = { ...o, path: run.store.outputPath(key, name) }
    run.made.set(`${step.name}.${name}`, rec)
    m.outputs[name] = rec
  }
  m.result = meta.result
  // a convenience view of this run's artifacts: <run>/steps/<step> -> the store entry's (read-only)
  // outputs, linked relatively so the store can be moved or copied whole
  try {
    const steps = join(run.runDir, "steps")
    mkdirSync(steps, { recursive: true })
    symlinkSync(relative(steps, join(run.store.entryDir(key), "out")), join(steps, step.name), "dir")
  } catch {
    // a file system without links, or the link is there: the manifest has every path
  }
}

/**
 * Re-hashes every input in full. A store input that fails is set aside and the step that made it runs
 * again; an external input (a model folder) that changed is re-hashed. True when the step's key must be
 * computed again.
 */
const inputsChanged = (run: Run, step: ResolvedStep, hashes: Hashes): Effect.Effect<boolean, unknown, Progress> =>
  Effect.gen(function* () {
    for (const [name, h] of Object.entries(hashes)) {
      const src = step.inputs[name]!
      if (src.kind === "path") {
        if (run.store.hashExternal(src.path, true) === h.hash) continue
        yield* warn(run, `${src.path}: changed since it was hashed (input "${name}" of step "${step.name}"); using its new content`)
        return true
      }
      const i = run.stepIndex.get(src.step)!
      const producer = run.manifest.steps[i]!
      const c = checkEntry(run.store, producer.key!, "hash", [src.output])
      if (c.mismatches.length === 0) continue
      yield* quarantine(run, producer.key!, src.step, c.mismatches)
      yield* runStep(run, run.wf.steps[i]!, i, producer)
      return true
    }
    return false
  })

/** After the stage: its inputs must be as they were (a stage never writes into an input). */
const inputsUntouched = (run: Run, step: ResolvedStep, hashes: Hashes) =>
  Effect.gen(function* () {
    for (const [name, h] of Object.entries(hashes)) {
      const src = step.inputs[name]!
      if (src.kind === "path") {
        if (run.store.hashExternal(src.path) !== h.hash) return yield* Effect.fail(new Error(`stage ${step.stage.name} changed its input "${name}": ${src.path}`))
        continue
      }
      const producer = run.manifest.steps[run.stepIndex.get(src.step)!]!
      const c = checkEntry(run.store, producer.key!, "stat", [src.output])
      if (c.mismatches.length === 0) continue
      yield* quarantine(run, producer.key!, src.step, c.mismatches)
      return yield* Effect.fail(new Error(`stage ${step.stage.name} wrote into its input "${name}": ${describeMismatches(c.mismatches)}`))
    }
  })

/**
 * Runs the stage into a temporary folder, checks it kept its inputs and wrote its outputs, and commits
 * the folder as the store entry `key` (the caller holds its lock; it is released here, whatever happens).
 */
const execute = (run: Run, step: ResolvedStep, key: string, hashes: Hashes, t0: number) =>
  Effect.acquireUseRelease(
    Effect.sync(() => run.store.makeTemp(key)),
    (tmp) =>
      Effect.gen(function* () {
        const outDir = join(tmp, "out")
        const checkpointDir = run.store.checkpointDir(key)
        mkdirSync(checkpointDir, { recursive: true })
        const outputs = Object.fromEntries(Object.keys(step.stage.outputs).map((o) => [o, join(outDir, o)]))
        const ctx: StageContext<unknown, string, string> = {
          step: step.name,
          params: step.params,
          seed: step.seed,
          key,
          inputs: Object.fromEntries(Object.entries(hashes).map(([k, v]) => [k, v.path])),
          outputs,
          outDir,
          checkpointDir,
          progress: {
            report: (fraction, note) => run.progress.emit({ _tag: "StepProgress", step: step.name, fraction, note }),
            log: (line) => run.progress.emit({ _tag: "Log", step: step.name, line }),
          },
        }
        // Plugin settings wrap the step: with `cluster:`, stages that fan out (the search's fitness evaluations) use the workers.
        const result = yield* (step.stage.run(ctx) as Effect.Effect<Json | void, RopewayError>).pipe(withSettings(run.wf))
        yield* inputsUntouched(run, step, hashes)
        const missingOutputs = Object.entries(outputs).filter(([, p]) => !existsSync(p)).map(([o]) => o)
        if (missingOutputs.length > 0) {
          return yield* Effect.fail(new Error(`stage ${step.stage.name} did not write its output(s): ${missingOutputs.join(", ")}`))
        }
        const sealed = run.store.seal(tmp, step.stage.outputs)
        return run.store.commit(tmp, {
          key, stage: step.stage.name, version: step.stage.version, step: step.name, params: step.paramsJson, seed: step.seed,
          inputs: Object.fromEntries(Object.entries(hashes).map(([k, v]) => [k, v.hash])),
          outputs: sealed.outputs, files: sealed.files, result: result ?? null, seconds: (performance.now() - t0) / 1000, createdAt: new Date().toISOString(),
        })
      }),
    // after a commit the temp folder is gone; otherwise (failure, interruption) the partial output goes
    (tmp) =>
      Effect.sync(() => {
        removeTree(tmp)
        run.store.unlock(key)
      }),
  )

/**
 * One step: reused from the store when its key is committed and checks out, else run under the key's
 * lock (waiting for, or taking over from, another process running it). Its manifest entry follows.
 */
const runStep = (run: Run, step: ResolvedStep, index: number, m: StepManifest): Effect.Effect<void, unknown, Progress> =>
  Effect.gen(function* () {
    const total = run.wf.steps.length
    for (let changes = 0; ; ) {
      const hashes = yield* Effect.sync(() => inputHashes(step, run.made, external(run)))
      if (hashes === undefined) return yield* Effect.die(new Error(`inputs of ${step.name} not made`)) // the loader's order prevents it
      const key = stepKey(step, hashes)
      m.key = key
      m.inputs = Object.fromEntries(Object.entries(hashes).map(([k, v]) => [k, { from: v.from, hash: v.hash }]))

      const cached = yield* reusable(run, key, step.name)
      if (cached !== undefined) {
        record(run, step, m, key, cached)
        m.status = "cached"
        yield* run.progress.emit({ _tag: "StepCached", index, total, step: step.name })
        return yield* save(run)
      }
      if (yield* inputsChanged(run, step, hashes)) {
        if (++changes >= MAX_ROUNDS) return yield* Effect.fail(new Error(`the inputs of step "${step.name}" keep changing while it is checked; see the warnings above`))
        continue
      }

      const holder = run.store.lock(key)
      if (holder !== undefined) {
        yield* waitForHolder(run, key, step.name, holder)
        continue // reuse what it made, or take the step over
      }
      if (existsSync(run.store.entryDir(key))) {
        // committed by another process between the look-up and the lock
        run.store.unlock(key)
        continue
      }

      m.status = "running"
      m.startedAt = new Date().toISOString()
      yield* save(run)
      yield* run.progress.emit({ _tag: "StepStart", index, total, step: step.name, stage: step.stage.name })
      const t0 = performance.now()
      const meta = yield* execute(run, step, key, hashes, t0)
      record(run, step, m, key, meta)
      m.status = "done"
      m.finishedAt = new Date().toISOString()
      m.seconds = (performance.now() - t0) / 1000
      yield* run.progress.emit({ _tag: "StepDone", index, total, step: step.name, seconds: m.seconds })
      return yield* save(run)
    }
  }).pipe(
    Effect.onExit((exit) =>
      Exit.isSuccess(exit)
        ? Effect.void
        : Effect.suspend(() => {
            m.status = Cause.hasInterruptsOnly(exit.cause) ? "interrupted" : "failed"
            m.finishedAt = new Date().toISOString()
            if (m.status === "failed") m.error = errorText(exit.cause)
            return saveIfPossible(run)
          }),
    ),
  )

/** The run's last manifest write and the progress line that ends it. */
const endRun = (run: Run, status: "done" | "failed" | "interrupted") =>
  Effect.suspend(() => {
    run.manifest.status = status
    run.manifest.finishedAt = new Date().toISOString()
    const count = (st: StepStatus) => run.manifest.steps.filter((s) => s.status === st).length
    return (status === "done" ? save(run) : saveIfPossible(run)).pipe(Effect.andThen(run.progress.emit({ _tag: "RunEnd", status, ran: count("done"), cached: count("cached") })))
  })

export const runWorkflow = (wf: Workflow, options: RunOptions = {}): Effect.Effect<RunResult, RunError, Progress> =>
  Effect.gen(function* () {
    const store = new RunStore(options.store ?? "runs")
    if (wf.model.kind === "path" && !wf.model.exists) {
      return yield* new RunError({ message: `${wf.file}: model folder not found: ${wf.model.path}`, runDir: undefined })
    }
    // A missing corpus would otherwise stop the run at its step, maybe hours in.
    const missing = wf.files.filter((f) => !f.exists && !existsSync(f.path)).map((f) => formatDiagnostic(f.where))
    if (missing.length > 0) return yield* new RunError({ message: missing.join("\n"), runDir: undefined })
    const progress = yield* Progress
    const adapter = yield* Effect.serviceOption(AdapterInfo)
    store.sweepTemp()
    const run = yield* openRun(wf, store, progress, adapter)

    const all = Effect.forEach(wf.steps, (step, i) => runStep(run, step, i, run.manifest.steps[i]!), { discard: true }).pipe(
      // an interrupted fiber runs no more ordinary code, only finalizers: record it here
      Effect.onInterrupt(() => endRun(run, "interrupted")),
    )
    const exit = yield* Effect.exit(all)
    if (Exit.isSuccess(exit)) {
      yield* endRun(run, "done")
      if (options.printRunDir ?? true) yield* Effect.sync(() => process.stdout.write(`${run.runDir}\n`))
      return { runDir: run.runDir, manifest: run.manifest }
    }
    if (Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
    yield* endRun(run, "failed")
    const failed = run.manifest.steps.find((s) => s.status === "failed")
    return yield* new RunError({
      message: `step "${failed?.name ?? "?"}" (stage ${failed?.stage ?? "?"}) failed: ${errorText(exit.cause)}\nrun folder: ${run.runDir}`,
      runDir: run.runDir,
    })
  }).pipe(Effect.provideService(PluginRegistry, wf.registry))
