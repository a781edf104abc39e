/**
 * Store housekeeping (`ropeway gc`): keeps the runs asked for (all, or the newest N of each workflow;
 * a run still going is always kept) and what they refer to; removes the other runs, the store entries
 * and checkpoints no kept run refers to, quarantined entries, and what dead processes left (temp
 * folders, locks). Freed bytes count files whose every link goes (entries share files by hard links).
 * The search's candidate cache (`_search-cache`) is kept: it holds evaluations, not artifacts.
 */
import { existsSync, lstatSync, readdirSync, rmdirSync } from "node:fs"
import { join } from "node:path"
import { isAlive, readHolder } from "./lock.ts"
import { listRuns, type RunInfo } from "./runs.ts"
import { removeTree, type RunStore } from "./store.ts"

export type GcKind = "run" | "entry" | "checkpoint" | "quarantined entry" | "temp folder" | "stale lock"

export interface GcItem {
  readonly kind: GcKind
  readonly path: string
  /** Bytes this removal frees (files linked from something kept count nothing). */
  bytes: number
}

export interface GcResult {
  readonly removed: readonly GcItem[]
  readonly freed: number
  readonly keptRuns: number
  readonly keptEntries: number
}

export interface GcOptions {
  /** Keep the newest N runs of each workflow; all when undefined. */
  readonly keepRuns?: number
  /** Report only. */
  readonly dryRun?: boolean
}

const children = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir).sort() : [])

/** The runs to keep: every running one, and the newest `keep` of each workflow (all when undefined). */
const keptRuns = (runs: readonly RunInfo[], keep: number | undefined): Set<RunInfo> => {
  if (keep === undefined) return new Set(runs)
  const kept = new Set(runs.filter((r) => r.state === "running"))
  const byWorkflow = new Map<string, RunInfo[]>()
  for (const r of runs) byWorkflow.set(r.workflow, [...(byWorkflow.get(r.workflow) ?? []), r])
  // runs come oldest first
  for (const list of byWorkflow.values()) for (const r of keep === 0 ? [] : list.slice(-keep)) kept.add(r)
  return kept
}

/** Counts bytes freed per item: a file's size goes to the first item holding its last link. */
const countFreed = (items: GcItem[]): number => {
  const inodes = new Map<string, { size: number; nlink: number; seen: number; item: GcItem }>()
  const walk = (path: string, item: GcItem): void => {
    const st = lstatSync(path, { throwIfNoEntry: false })
    if (st === undefined) return
    if (st.isDirectory()) {
      for (const name of readdirSync(path)) walk(join(path, name), item)
      return
    }
    const id = `${st.dev}:${st.ino}`
    const known = inodes.get(id)
    if (known === undefined) inodes.set(id, { size: st.size, nlink: st.nlink, seen: 1, item })
    else known.seen++
  }
  for (const item of items) walk(item.path, item)
  let total = 0
  for (const f of inodes.values()) {
    if (f.seen < f.nlink) continue
    f.item.bytes += f.size
    total += f.size
  }
  return total
}

export const collectGarbage = (store: RunStore, options: GcOptions = {}): GcResult => {
  const runs = listRuns(store)
  const kept = keptRuns(runs, options.keepRuns)
  const removed: GcItem[] = []
  const add = (kind: GcKind, path: string) => removed.push({ kind, path, bytes: 0 })

  for (const r of runs) if (!kept.has(r)) add("run", r.dir)
  const live = new Set<string>()
  for (const name of children(join(store.root, "_locks"))) {
    const h = readHolder(join(store.root, "_locks", name))
    if (h !== undefined && isAlive(h)) live.add(name)
    else add("stale lock", join(store.root, "_locks", name))
  }
  const wanted = new Set([...[...kept].flatMap((r) => r.keys), ...live])
  for (const key of store.keys()) if (!wanted.has(key)) add("entry", store.entryDir(key))
  for (const key of children(join(store.root, "_checkpoints"))) if (!wanted.has(key)) add("checkpoint", store.checkpointDir(key))
  for (const name of children(join(store.root, "_quarantine"))) add("quarantined entry", join(store.root, "_quarantine", name))
  for (const name of children(join(store.root, "_tmp"))) {
    const pid = Number(name.split(".")[1])
    if (!Number.isInteger(pid) || !isAlive({ pid, start: null })) add("temp folder", join(store.root, "_tmp", name))
  }

  const freed = countFreed(removed)
  if (!options.dryRun) {
    for (const item of removed) removeTree(item.path)
    // workflow folders left without runs
    for (const r of runs) {
      const wfDir = join(r.dir, "..")
      if (existsSync(wfDir) && readdirSync(wfDir).length === 0) rmdirSync(wfDir)
    }
  }
  return { removed, freed, keptRuns: kept.size, keptEntries: store.keys().filter((k) => wanted.has(k)).length }
}

/** 1.5 MiB, 340 KiB, 12 B. */
export const formatBytes = (n: number): string => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]
  let i = 0
  let x = n
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024
    i++
  }
  return i === 0 ? `${n} B` : `${x.toFixed(x < 10 ? 2 : x < 100 ? 1 : 0)} ${units[i]}`
}
