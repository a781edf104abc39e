/**
 * Scale-out: a throwaway Postgres on loopback, two `ropeway worker` processes (effect/cluster runners),
 * and a tiny search (population 6, 2 generations) run twice: locally, and with its evaluations sent to
 * the workers. The factor set and the fitness history must be identical, and both workers must have
 * evaluated something. Then, on the same workers: the short-context penalty (baseline measured on the
 * workers) equals the local values too; each worker loads a model once; a plugin fitness with its own
 * `evaluate`, which workers do not have, fails with one clear error.
 * Everything (workers, server, temp dirs) is torn down even when it fails.
 * Skipped, saying so, only where no Postgres binaries are installed (CI installs postgresql).
 */
import { afterAll, expect, test } from "bun:test"
import { type Subprocess } from "bun"
import { Cause, Effect, type Exit } from "effect"
import { SqlClient } from "effect/sql"
import { mkdirSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { Gpu } from "../../kernels/device.ts"
import { storeLayer, withCluster } from "../../cluster/index.ts"
import { definePlugin, PluginRegistry, Registry } from "../../pipeline/workflow/plugin.ts"
import type { StageContext } from "../../pipeline/workflow/stage.ts"
import { parseFactorSetFile } from "../../plugins/rope/formats.ts"
import { type FitnessPlugin, perplexity, pplTruncate, type PplTruncateParams } from "../../plugins/search/fitness.ts"
import type { SearchLog } from "../../plugins/search/index.ts"
import { runSearchStage, type SearchParams } from "../../stages/search.ts"
import { gpu } from "../gpu-shared.ts"
import { removeDir, tempDir, writeRandomModel } from "../models/random-model.ts"
import { freePort, type Pg, pgBin, startPg } from "./pg.ts"

const ROOT = resolve(import.meta.dirname, "../..")
const BIN = pgBin()
if (BIN === undefined) console.warn("distributed-search: SKIPPED, no Postgres binaries (install postgresql, or set PG_BIN to its bin folder)")

const dirs: string[] = []
afterAll(() => {
  for (const d of dirs) removeDir(d)
})
const tmp = (): string => {
  const d = tempDir("ropeway-cluster-")
  dirs.push(d)
  return d
}

const PARAMS: SearchParams = {
  mode: "first",
  length: 256,
  samples: 2,
  strategyParams: { populationSize: 6, iterations: 2, parents: 3, mutants: 2, crossovers: 1 },
  data: { tasks: { filler: 1 } },
}

const MODEL = { hidden: 32, layers: 2, heads: 2, kvHeads: 1, intermediate: 64, vocab: 258, maxPositions: 64, seed: 11 }

function context(modelDir: string, extra: Partial<SearchParams> = {}): StageContext<SearchParams, string, string> {
  const root = tmp()
  const outDir = join(root, "out")
  mkdirSync(outDir, { recursive: true })
  mkdirSync(join(root, "checkpoint"), { recursive: true })
  return {
    step: "search",
    // Each run its own candidate cache, or the second would evaluate nothing.
    params: { ...PARAMS, ...extra, cacheDir: join(root, "cache") },
    seed: 7,
    key: "test",
    inputs: { model: modelDir },
    outputs: { factors: join(outDir, "factors"), log: join(outDir, "log") },
    outDir,
    checkpointDir: join(root, "checkpoint"),
    progress: { report: () => Effect.void, log: () => Effect.void },
  }
}

interface Outcome {
  readonly result: Record<string, unknown>
  readonly sets: unknown
  readonly history: unknown
}

const outcome = (ctx: StageContext<SearchParams, string, string>, result: unknown): Outcome => {
  const log = JSON.parse(readFileSync(join(ctx.outputs["log"]!, "search-log.json"), "utf8")) as SearchLog
  return {
    result: result as Record<string, unknown>,
    sets: parseFactorSetFile(readFileSync(ctx.outputs["factors"]!, "utf8")).sets,
    // Everything but the timings, which differ by nature.
    history: log.entries.map((e) => ({ ...e, seconds: undefined })),
  }
}

interface Worker {
  readonly name: string
  readonly proc: Subprocess<"ignore", "pipe", "pipe">
  readonly out: string[]
  readonly err: string[]
}

function spawnWorker(name: string, store: string, port: number): Worker {
  const proc = Bun.spawn([join(ROOT, "node_modules/.bin/bun"), "cli/main.ts", "worker", "--store", store, "--address", `127.0.0.1:${port}`, "--id", name], {
    cwd: ROOT,
    env: { ...process.env, EGL_PLATFORM: "surfaceless" },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  })
  const w: Worker = { name, proc, out: [], err: [] }
  const pump = async (stream: ReadableStream<Uint8Array>, into: string[]): Promise<void> => {
    const dec = new TextDecoder()
    let rest = ""
    for await (const chunk of stream) {
      rest += dec.decode(chunk, { stream: true })
      const lines = rest.split("\n")
      rest = lines.pop()!
      into.push(...lines)
    }
    if (rest !== "") into.push(rest)
  }
  void pump(proc.stdout, w.out)
  void pump(proc.stderr, w.err)
  return w
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function waitFor(what: string, ok: () => boolean | Promise<boolean>, workers: readonly Worker[], ms: number): Promise<void> {
  const until = Date.now() + ms
  while (!(await ok())) {
    for (const w of workers) {
      if (w.proc.exitCode !== null) throw new Error(`worker ${w.name} exited (${w.proc.exitCode}) while waiting for ${what}:\n${[...w.out, ...w.err].join("\n")}`)
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}:\n${workers.map((w) => `--- ${w.name}\n${[...w.out, ...w.err].join("\n")}`).join("\n")}`)
    await sleep(200)
  }
}

async function stopWorker(w: Worker): Promise<void> {
  if (w.proc.exitCode !== null || w.proc.signalCode !== null) return
  w.proc.kill("SIGTERM")
  const done = await Promise.race([w.proc.exited.then(() => true), sleep(5000).then(() => false)])
  if (!done) {
    w.proc.kill("SIGKILL")
    await w.proc.exited
  }
}

test.skipIf(BIN === undefined)(
  "a search distributed over two workers through effect/cluster on Postgres equals the local search",
  async () => {
    const modelDir = tmp()
    writeRandomModel(modelDir, MODEL)
    let pg: Pg | undefined
    const workers: Worker[] = []
    try {
      pg = await startPg(BIN!)
      const store = pg.url
      for (const name of ["w1", "w2"]) workers.push(spawnWorker(name, store, await freePort()))

      // The local run while the workers start.
      const rt = await gpu()
      const localCtx = context(modelDir)
      const local = outcome(localCtx, await Effect.runPromise(runSearchStage(localCtx).pipe(Effect.provideService(Gpu, rt))))
      expect(local.result["evaluated"]).toBe(12)

      await waitFor("both workers ready", () => workers.every((w) => w.out.some((l) => l.startsWith(`worker ${w.name} ready`))), workers, 60_000)
      // A runner that joins later gets its shards a few seconds on (the first one holds them all until
      // it re-balances): wait until both hold shard locks (Postgres advisory locks, named by the
      // workers' application_name), so both get requests.
      const holders = () =>
        Effect.runPromise(
          Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const rows = yield* sql<{ n: number }>`SELECT count(DISTINCT a.application_name)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'ropeway-worker:%'`
            return rows[0]?.n ?? 0
          }).pipe(Effect.provide(storeLayer(store)), Effect.orElseSucceed(() => 0)),
        )
      await waitFor("both workers to hold shards", async () => (await holders()) === 2, workers, 30_000)

      const distCtx = context(modelDir)
      const dist = outcome(
        distCtx,
        // As the runner does for a workflow with `cluster: { store }`.
        await Effect.runPromise(runSearchStage(distCtx).pipe(withCluster({ store }))),
      )

      expect(dist.result["evaluated"]).toBe(12)
      expect(dist.result["best"]).toEqual(local.result["best"])
      expect(dist.result["genome"]).toEqual(local.result["genome"])
      expect(dist.sets).toEqual(local.sets)
      expect(dist.history).toEqual(local.history)
      const counts = workers.map((w) => w.out.filter((l) => l.startsWith(`${w.name}: evaluated`)).length)
      expect(counts.every((n) => n >= 1)).toBe(true)
      expect(counts[0]! + counts[1]!).toBeGreaterThanOrEqual(12)

      // The short-context penalty (its baseline is measured on the worker, from the model's own RoPE), chunked.
      // On a base model that interpolates 8x itself, candidates do worse at L0 than it does: the penalty bites.
      const linearDir = tmp()
      writeRandomModel(linearDir, { ...MODEL, ropeScaling: { rope_type: "linear", factor: 8 } })
      const plain: Partial<SearchParams> = { strategyParams: { ...PARAMS.strategyParams, iterations: 0 }, mscale: 1, chunk: 96 }
      const penalised: Partial<SearchParams> = { ...plain, fitnessParams: { shortPenalty: { weight: 2, samples: 2 } } }
      const run = async (extra: Partial<SearchParams>, distributed: boolean): Promise<Outcome> => {
        const c = context(linearDir, extra)
        const r = await Effect.runPromise(distributed ? runSearchStage(c).pipe(withCluster({ store })) : runSearchStage(c).pipe(Effect.provideService(Gpu, rt)))
        return outcome(c, r)
      }
      const pLocal = await run(penalised, false)
      const pDist = await run(penalised, true)
      expect(pDist.result["evaluated"]).toBe(6)
      expect(pDist.result["best"]).toEqual(pLocal.result["best"])
      expect(pDist.history).toEqual(pLocal.history)
      const unpenalised = await run(plain, false)
      expect(pDist.history).not.toEqual(unpenalised.history)

      // Each worker loaded each model once (not once per request).
      for (const w of workers) {
        const loads = w.out.filter((l) => l.startsWith(`${w.name}: loaded model`)).length
        expect(loads).toBeGreaterThanOrEqual(1)
        expect(loads).toBeLessThanOrEqual(2)
      }

      // A fitness with its own `evaluate` from a plugin the workers do not have: one clear error.
      const doubled: FitnessPlugin<PplTruncateParams> = {
        ...pplTruncate,
        name: "double-ppl",
        description: "2 × ppl-truncate (a test plugin)",
        evaluate: async (model, samples, table, chunk) => 2 * (await perplexity(model, samples, table, chunk)),
      }
      const registry = new Registry()
      registry.register(definePlugin({ name: "test-fitness", version: "1.0.0", fitness: [doubled] }), "test")
      const badCtx = context(modelDir)
      const exit = await Effect.runPromiseExit(
        runSearchStage({ ...badCtx, params: { ...badCtx.params, fitness: "double-ppl" } }).pipe(withCluster({ store, concurrency: 2 }), Effect.provideService(PluginRegistry, registry)),
      )
      expect(exit._tag).toBe("Failure")
      expect(String(Cause.squash((exit as Exit.Failure<unknown, unknown>).cause))).toContain('fitness "double-ppl" has no evaluate known to this worker')
    } finally {
      await Promise.all(workers.map(stopWorker))
      pg?.stop()
    }
  },
  240_000,
)
