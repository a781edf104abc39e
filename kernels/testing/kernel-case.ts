/**
 * The kernel table's shape: an op, the variants it has on this adapter, and its cases (inputs of some
 * shape, a launcher, the float64 reference of each output with its tolerance); and the runner that
 * launches a case and compares it with its reference.
 *
 * It lives in kernels/, not test/, because two layers use it: test/kernels/ runs every case on every
 * variant, and bench/ times the same launchers at larger shapes (bench/ must not import from test/).
 * Nothing here depends on a test framework: failures are plain errors with the worst element named.
 */
import { type AdapterProfile, GpuRuntime } from "../runtime.ts"
import { type DType, type Tensor, shapeString } from "../tensor.ts"
import { type Tolerance, describeComparison, compare, expectSameBits } from "./compare.ts"

/** One way to run an op, forced explicitly by the cases' setup (a kernel option, a weight storage, a profile). */
export interface Variant {
  readonly name: string
}

/** Host copies of a launch's outputs, by name. */
export type Outputs = Readonly<Record<string, Float32Array | Uint32Array | Float64Array>>

/** A case's inputs on the device, ready to run. */
export interface Launch {
  /**
   * Records the op into the batch (no wait). Tests call it once; benches call it repeatedly to time it,
   * and each call frees what the previous one returned. Ops that update in place (optimizer steps,
   * gradient accumulation, rope) match their reference after the first call only.
   */
  run(): void
  /** Reads back what the last `run` produced. */
  read(): Promise<Outputs>
  /** Frees what `setup` and `run` allocated. */
  release(): void
}

/** A float64 reference output and the tolerance the kernel's output must meet against it. */
export interface Expected {
  readonly want: ArrayLike<number>
  readonly tol: Tolerance
  /** For naming the worst element by row and column. */
  readonly shape?: readonly number[]
}

export interface KernelCase<V extends Variant = Variant> {
  /** Shapes and what the case is for, e.g. "17×33×12 (first M on the big block)". */
  readonly name: string
  readonly dtype: DType
  /** Cost of a cold compile or a big reference: such cases run only when asked for (see test/kernels). */
  readonly slow?: boolean
  /** Checked by running the case twice from fresh inputs: the outputs must be the same bits. */
  readonly deterministic?: boolean
  /** Cases sharing this key (same inputs, another path) must give the same bits, under each variant. */
  readonly sameBits?: string
  /** False where this variant cannot run the case (e.g. a texture weight past the texture limit). */
  applies?(v: V, rt: GpuRuntime): boolean
  /** Uploads the inputs for variant `v`. */
  setup(rt: GpuRuntime, v: V): Launch
  /** The float64 reference of each output `read` returns (computed once, on first use). */
  expected(): Readonly<Record<string, Expected>>
}

/** A check of a float64 reference on the CPU: against central differences (the training ops' gradient checks), hand values, or another reference. */
export interface ReferenceCheck {
  readonly name: string
  run(): Readonly<Record<string, { readonly got: ArrayLike<number> } & Expected>>
}

export interface KernelOp<V extends Variant = Variant> {
  readonly op: string
  /** The variants present on this adapter. */
  variants(rt: GpuRuntime): readonly V[]
  cases(rt: GpuRuntime): readonly KernelCase<V>[]
  readonly references?: readonly ReferenceCheck[]
  /** Every variant gives the same bits (the table checks each case across variants). */
  readonly variantsAgree?: boolean
}

/** For ops with a single kernel. */
export const SINGLE: readonly Variant[] = [{ name: "single kernel" }]

/** Memoises a thunk (references and host inputs are computed once per case, shared by variants). */
export function once<T>(f: () => T): () => T {
  let done = false
  let value: T
  return () => {
    if (!done) {
      value = f()
      done = true
    }
    return value
  }
}

/** Throws unless `t` has `shape` (every table case checks its outputs' shapes). */
export function expectShapeOf(op: string, what: string, t: Tensor, shape: readonly number[]): Tensor {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${op}: ${what} has shape ${shapeString(t.shape)}, expected ${shapeString(shape)}`)
  }
  return t
}

export interface LauncherOptions {
  /** Derives what is compared from what was read (a sub-range, an angle). */
  readonly view?: (got: Readonly<Record<string, Float32Array>>) => Outputs
  /** Frees what is not a tensor (a weight, a KV cache, a rope table) at release. */
  readonly cleanup?: () => void
}

/**
 * The usual launcher: `run` records the op and returns the tensors to read back, by name. Those not
 * among `inputs` are the op's fresh outputs, freed before the next run; `inputs` are freed by release.
 */
export function launcher(rt: GpuRuntime, inputs: readonly (Tensor | undefined)[], run: () => Readonly<Record<string, Tensor>>, opts: LauncherOptions = {}): Launch {
  let out: Readonly<Record<string, Tensor>> = {}
  const free = (): void => rt.release(...new Set(Object.values(out).filter((t) => !inputs.includes(t))))
  return {
    run() {
      free()
      out = run()
    },
    async read() {
      const got: Record<string, Float32Array> = {}
      for (const [name, t] of Object.entries(out)) got[name] = await rt.read(t)
      return opts.view === undefined ? got : opts.view(got)
    },
    release() {
      free()
      out = {}
      rt.release(...inputs)
      opts.cleanup?.()
    },
  }
}

/** The adapter as test names show it: device and backend, e.g. "llvmpipe-llvm-15-0-6-256-bits via opengles". */
export function adapterLabel(rt: GpuRuntime): string {
  const a = rt.adapter
  const device = [a.device.replace(/-+$/, ""), a.description].find((s) => s !== "") ?? a.vendor
  return `${device} via ${a.backend}`
}

const views = new WeakMap<GpuRuntime, Map<AdapterProfile, GpuRuntime>>()

/**
 * The same device seen as an adapter of `profile`, so ops that choose by profile (sumsq's workgroup
 * count, the default kernel variants) take the path a real GPU (or llvmpipe) would, on this adapter.
 * It has its own batch and buffer pool: flush work recorded on one before using the other.
 */
export function withProfile(rt: GpuRuntime, profile: AdapterProfile): GpuRuntime {
  if (rt.adapter.profile === profile) return rt
  let byProfile = views.get(rt)
  if (byProfile === undefined) views.set(rt, (byProfile = new Map()))
  let view = byProfile.get(profile)
  if (view === undefined) byProfile.set(profile, (view = new GpuRuntime(rt.device, { ...rt.adapter, profile }, rt.instance)))
  rt.flush()
  return view
}

/** Sets up, runs once, reads back and frees a case. */
export async function runCase<V extends Variant>(rt: GpuRuntime, c: KernelCase<V>, v: V): Promise<Outputs> {
  const launch = c.setup(rt, v)
  try {
    launch.run()
    return await launch.read()
  } finally {
    launch.release()
  }
}

/** Compares each expected output with what the kernel gave; throws one error listing every output that missed. */
export function checkOutputs(what: string, got: Outputs, expected: Readonly<Record<string, Expected>>): void {
  const failures: string[] = []
  for (const [name, e] of Object.entries(expected)) {
    const g = got[name]
    if (g === undefined) {
      failures.push(`${name}: the launch returned no such output`)
      continue
    }
    const c = compare(g, e.want, e.tol)
    if (!c.ok) failures.push(describeComparison(name, c, e.tol, e.shape))
  }
  if (failures.length > 0) throw new Error(`${what}\n  ${failures.join("\n  ")}`)
}

/** The name a test shows for a case: op, variant, dtype, case, adapter. */
const caseTitle = (op: string, c: KernelCase, v: Variant, rt: GpuRuntime): string =>
  `${op} [${v.name}, ${c.dtype}] ${c.name} on ${adapterLabel(rt)}`

/** Runs a case and compares every output with its float64 reference. */
export async function checkCase<V extends Variant>(rt: GpuRuntime, op: string, c: KernelCase<V>, v: V): Promise<void> {
  const got = await runCase(rt, c, v)
  checkOutputs(caseTitle(op, c, v, rt), got, c.expected())
}

/** Throws unless two runs' outputs hold the same bits. */
export function expectSameOutputs(what: string, a: Outputs, b: Outputs): void {
  for (const [name, x] of Object.entries(a)) {
    const y = b[name]
    if (y === undefined) throw new Error(`${what}: output ${name} missing from the second run`)
    expectSameBits(`${what}: ${name}`, x, y)
  }
}
