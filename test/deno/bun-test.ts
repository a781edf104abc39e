/**
 * `bun:test` under Deno: deno.json maps the `bun:test` import here, so the same test files run under
 * both runtimes. describe/test/hooks are built on Deno.test (one Deno test per test, named
 * "suite > test" as Bun prints them); expect is Jest's (npm `expect`, which Bun's follows) plus the two
 * Bun matchers the suite uses; spyOn is Jest's. Timeouts are Bun's business: Deno has none per test.
 */
import { expect as jestExpect } from "expect"
import { spyOn } from "jest-mock"

type Fn = () => unknown | Promise<unknown>

// The one Deno API used (tsc checks this file with Bun's types, which have no Deno namespace).
declare const Deno: {
  test(def: { name: string; ignore: boolean; sanitizeOps: boolean; sanitizeResources: boolean; sanitizeExit: boolean; fn: () => Promise<void> }): void
}

interface Suite {
  readonly name: string
  readonly parent: Suite | undefined
  readonly beforeAll: Fn[]
  readonly afterAll: Fn[]
  readonly beforeEach: Fn[]
  readonly afterEach: Fn[]
  /** Tests that will run in this suite and below; afterAll runs when the last of them has. */
  total: number
  finished: number
  started: boolean
}

const suite = (name: string, parent: Suite | undefined): Suite =>
  ({ name, parent, beforeAll: [], afterAll: [], beforeEach: [], afterEach: [], total: 0, finished: 0, started: false })

// Deno runs each test file in its own isolate, so one root per file.
let current = suite("", undefined)

const chain = (s: Suite): Suite[] => (s.parent === undefined ? [s] : [...chain(s.parent), s])
const fullName = (s: Suite, name: string): string => [...chain(s).map((x) => x.name).filter((n) => n !== ""), name].join(" > ")

async function runTest(suites: readonly Suite[], fn: Fn): Promise<void> {
  for (const s of suites) if (!s.started) {
    s.started = true
    for (const h of s.beforeAll) await h()
  }
  try {
    for (const s of suites) for (const h of s.beforeEach) await h()
    try {
      await fn()
    } finally {
      for (const s of [...suites].reverse()) for (const h of s.afterEach) await h()
    }
  } finally {
    for (const s of [...suites].reverse()) if (++s.finished === s.total) for (const h of s.afterAll) await h()
  }
}

function register(name: string, fn: Fn, skipped: boolean): void {
  const skip = skipped || skipDepth > 0
  const suites = chain(current)
  if (!skip) for (const s of suites) s.total++
  Deno.test({
    name: fullName(current, name),
    ignore: skip,
    // Dawn's callbacks and the pipeline's worker pools outlive single tests by design
    sanitizeOps: false,
    sanitizeResources: false,
    sanitizeExit: false,
    fn: () => runTest(suites, fn),
  })
}

/** printf-style names of test.each: %s %d %i %f %p %j %o %# %%. */
function format(name: string, args: readonly unknown[], index: number): string {
  let i = 0
  return name.replace(/%[sdifpjo#%]/g, (m) => {
    if (m === "%%") return "%"
    if (m === "%#") return String(index)
    const v = args[i++]
    return m === "%p" || m === "%j" || m === "%o" ? JSON.stringify(v) : String(v)
  })
}

type TestFn = {
  (name: string, fn: Fn, timeout?: number): void
  skip: (name: string, fn: Fn, timeout?: number) => void
  todo: (name: string, fn?: Fn) => void
  if: (cond: boolean) => (name: string, fn: Fn, timeout?: number) => void
  skipIf: (cond: boolean) => (name: string, fn: Fn, timeout?: number) => void
  each: <T>(table: readonly T[]) => (name: string, fn: (...args: any[]) => unknown, timeout?: number) => void
}

export const test: TestFn = Object.assign((name: string, fn: Fn) => register(name, fn, false), {
  skip: (name: string, fn: Fn) => register(name, fn, true),
  todo: (name: string, fn: Fn = () => {}) => register(name, fn, true),
  if: (cond: boolean) => (name: string, fn: Fn) => register(name, fn, !cond),
  skipIf: (cond: boolean) => (name: string, fn: Fn) => register(name, fn, cond),
  each: <T>(table: readonly T[]) => (name: string, fn: (...args: any[]) => unknown) =>
    table.forEach((row, i) => {
      const args = Array.isArray(row) ? row : [row]
      register(format(name, args, i), () => fn(...args), false)
    }),
})
export const it = test

type DescribeFn = {
  (name: string, fn: () => void): void
  skip: (name: string, fn: () => void) => void
  if: (cond: boolean) => (name: string, fn: () => void) => void
  skipIf: (cond: boolean) => (name: string, fn: () => void) => void
}

/** Inside a skipped describe every test is registered as ignored. */
let skipDepth = 0

function describeIn(name: string, fn: () => void, skip: boolean): void {
  const parent = current
  current = suite(name, parent)
  if (skip) skipDepth++
  try {
    fn()
  } finally {
    if (skip) skipDepth--
    current = parent
  }
}

export const describe: DescribeFn = Object.assign((name: string, fn: () => void) => describeIn(name, fn, false), {
  skip: (name: string, fn: () => void) => describeIn(name, fn, true),
  if: (cond: boolean) => (name: string, fn: () => void) => describeIn(name, fn, !cond),
  skipIf: (cond: boolean) => (name: string, fn: () => void) => describeIn(name, fn, cond),
})

export const beforeAll = (fn: Fn): void => void current.beforeAll.push(fn)
export const afterAll = (fn: Fn): void => void current.afterAll.push(fn)
export const beforeEach = (fn: Fn): void => void current.beforeEach.push(fn)
export const afterEach = (fn: Fn): void => void current.afterEach.push(fn)
export const setDefaultTimeout = (_ms: number): void => {}

jestExpect.extend({
  toStartWith(received: string, prefix: string) {
    const pass = typeof received === "string" && received.startsWith(prefix)
    return { pass, message: () => `expected ${JSON.stringify(received)} ${pass ? "not " : ""}to start with ${JSON.stringify(prefix)}` }
  },
  toEndWith(received: string, suffix: string) {
    const pass = typeof received === "string" && received.endsWith(suffix)
    return { pass, message: () => `expected ${JSON.stringify(received)} ${pass ? "not " : ""}to end with ${JSON.stringify(suffix)}` }
  },
})
export const expect = jestExpect
export { spyOn }
