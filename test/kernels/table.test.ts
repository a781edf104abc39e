/**
 * The kernel table (kernels/testing/table.ts): every case of every op under every variant, on the adapter
 * `acquireRuntime()` gives (ROPEWAY_BACKEND picks another; CI runs this file on each software adapter),
 * compared with its float64 reference. Test names carry the op, adapter, variant and dtype. Cases
 * marked slow (cold compiles of wide heads) run with ROPEWAY_SLOW_TESTS=1.
 */
import { describe, setDefaultTimeout, test } from "bun:test"
import { expectClose } from "../../kernels/testing/compare.ts"
import {
  type KernelCase,
  type KernelOp,
  type Outputs,
  type Variant,
  adapterLabel,
  checkCase,
  expectSameOutputs,
  runCase,
} from "../../kernels/testing/kernel-case.ts"
import { KERNEL_TABLE } from "../../kernels/testing/table.ts"
import { gpu } from "../gpu-shared.ts"

const rt = await gpu()
const adapter = adapterLabel(rt)
const slow = process.env.ROPEWAY_SLOW_TESTS === "1"
// A cold Mesa shader cache compiles each kernel at its first dispatch: minutes for the unrolled ones on
// a busy machine (scripts/test.sh gives every test as long; this holds under a plain `bun test` too).
setDefaultTimeout(300_000)

/** Cases that must give the same bits: each sameBits group, and with `variantsAgree` every case across variants. */
function bitGroups(op: KernelOp, cases: readonly KernelCase[], variants: readonly Variant[]): { name: string; runs: [KernelCase, Variant][] }[] {
  const groups: { name: string; runs: [KernelCase, Variant][] }[] = []
  const keyed = new Map<string, KernelCase[]>()
  for (const c of cases) if (c.sameBits !== undefined) keyed.set(c.sameBits, [...(keyed.get(c.sameBits) ?? []), c])
  const across = op.variantsAgree === true ? [variants] : variants.map((v) => [v])
  for (const vs of across) {
    const label = vs.map((v) => v.name).join(" = ")
    for (const [key, members] of keyed) groups.push({ name: `[${label}] same bits, ${key}: ${members.map((c) => c.name).join(" / ")}`, runs: members.flatMap((c) => vs.map((v) => [c, v] as [KernelCase, Variant])) })
    if (vs.length > 1) {
      for (const c of cases) if (c.sameBits === undefined) groups.push({ name: `[${label}] same bits: ${c.name}`, runs: vs.map((v) => [c, v] as [KernelCase, Variant]) })
    }
  }
  // A group left with one run (the others do not apply) compares nothing; slow cases run only when asked.
  return groups
    .map((g) => ({ ...g, runs: g.runs.filter(([c, v]) => c.applies?.(v, rt) !== false && (slow || c.slow !== true)) }))
    .filter((g) => g.runs.length > 1)
}

for (const op of KERNEL_TABLE) {
  const references = op.references ?? []
  if (references.length > 0) {
    describe(`${op.op}: float64 reference`, () => {
      for (const r of references) {
        test(r.name, () => {
          for (const [name, e] of Object.entries(r.run())) expectClose(`${r.name}: ${name}`, e.got, e.want, e.tol, e.shape)
        })
      }
    })
  }

  describe(`${op.op} on ${adapter}`, () => {
    const variants = op.variants(rt)
    const cases = op.cases(rt)
    for (const v of variants) {
      for (const c of cases) {
        if (c.applies?.(v, rt) === false) continue
        const title = `[${v.name}, ${c.dtype}] ${c.name}`
        test.skipIf(c.slow === true && !slow)(title, () => checkCase(rt, op.op, c, v))
        if (c.deterministic === true) {
          test(`[${v.name}, ${c.dtype}] deterministic, two runs give the same bits: ${c.name}`, async () => {
            expectSameOutputs(`${op.op} [${v.name}] ${c.name}`, await runCase(rt, c, v), await runCase(rt, c, v))
          })
        }
      }
    }
    for (const g of bitGroups(op, cases, variants)) {
      test(g.name, async () => {
        let first: Outputs | undefined
        for (const [c, v] of g.runs) {
          const out = await runCase(rt, c, v)
          if (first === undefined) first = out
          else expectSameOutputs(`${op.op} [${v.name}] ${c.name} against [${g.runs[0]![1].name}] ${g.runs[0]![0].name}`, first, out)
        }
      })
    }
  })
}
