/**
 * Which process holds a step, and whether it still lives. A holder is named by its pid and, where
 * /proc exists, the kernel's start time of that pid, so a pid reused by an unrelated process after a
 * kill -9 does not keep a stale claim alive.
 *
 * A lock file is created whole (written beside it, then hard-linked into place, which fails when the
 * name exists), so a reader never sees an empty or half-written one. Taking over a dead holder's lock
 * goes through a second, short-lived guard file, so two processes that both find it stale cannot both
 * win.
 */
import { linkSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"

export interface Holder {
  readonly pid: number
  /** /proc/<pid>/stat's start time (clock ticks since boot); null where /proc is not there. */
  readonly start: number | null
}

const startTime = (pid: number): number | null => {
  try {
    // the command name (field 2) may hold spaces and parentheses: count fields after its last ")"
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    const t = Number(fields[19])
    return Number.isFinite(t) ? t : null
  } catch {
    return null
  }
}

export const thisProcess = (): Holder => ({ pid: process.pid, start: startTime(process.pid) })

/** True while `h` runs: its pid exists and, when both are known, started when `h` says. */
export const isAlive = (h: Holder): boolean => {
  try {
    process.kill(h.pid, 0)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPERM") return false
  }
  if (h.start === null) return true
  const now = startTime(h.pid)
  return now === null || now === h.start
}

export const sameHolder = (a: Holder, b: Holder): boolean => a.pid === b.pid && a.start === b.start

const format = (h: Holder): string => `${h.pid} ${h.start ?? "-"}\n`

/** The holder named in a lock file; undefined when the file is gone or is not one. */
export const readHolder = (file: string): Holder | undefined => {
  let text: string
  try {
    text = readFileSync(file, "utf8")
  } catch {
    return undefined
  }
  const [pid, start] = text.trim().split(/\s+/)
  const p = Number(pid)
  if (!Number.isInteger(p) || p <= 0) return undefined
  const s = start === undefined || start === "-" ? null : Number(start)
  return { pid: p, start: s !== null && Number.isFinite(s) ? s : null }
}

/** Creates `file` naming `me`; false when it exists. */
const create = (file: string, me: Holder): boolean => {
  const tmp = `${file}.${me.pid}.new`
  writeFileSync(tmp, format(me))
  try {
    linkSync(tmp, file)
    return true
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false
    throw e
  } finally {
    rmSync(tmp, { force: true })
  }
}

/** A guard or lock file nobody can be writing any more: no readable holder for a while, or a dead one. */
const abandoned = (file: string): boolean => {
  const h = readHolder(file)
  if (h !== undefined) return !isAlive(h)
  try {
    return Date.now() - statSync(file).mtimeMs > 10_000
  } catch {
    return false
  }
}

/**
 * Claims `file` for this process. Returns undefined when this process holds it now (taking over a dead
 * holder's claim), or the live holder.
 */
export const acquire = (file: string): Holder | undefined => {
  const me = thisProcess()
  for (let attempt = 0; attempt < 20; attempt++) {
    if (create(file, me)) return undefined
    const holder = readHolder(file)
    if (holder !== undefined && sameHolder(holder, me)) return undefined
    if (holder !== undefined && isAlive(holder)) return holder
    if (holder === undefined && !abandoned(file)) continue // being replaced right now: look again
    // Stale: remove it under the guard, re-checking that it is still the same stale claim.
    const guard = `${file}.takeover`
    if (!create(guard, me)) {
      if (abandoned(guard)) rmSync(guard, { force: true })
      continue
    }
    try {
      const again = readHolder(file)
      if ((again === undefined && abandoned(file)) || (again !== undefined && holder !== undefined && sameHolder(again, holder))) rmSync(file, { force: true })
    } finally {
      rmSync(guard, { force: true })
    }
  }
  const holder = readHolder(file)
  if (holder !== undefined && isAlive(holder)) return holder
  throw new Error(`${file}: cannot take this lock (it keeps changing hands)`)
}

/** Removes `file` when this process holds it. */
export const release = (file: string): void => {
  const h = readHolder(file)
  if (h !== undefined && sameHolder(h, thisProcess())) rmSync(file, { force: true })
}
