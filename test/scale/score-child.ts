/**
 * A child process for test/scale: loads a folder, scores the token file, prints one JSON line with the
 * log-probs, the process's peak resident memory (VmHWM) and the device bytes held; args: DIR TOKENS.json [kv dtype].
 */
import { readFileSync } from "node:fs"
import { acquireRuntime } from "../../kernels/device.ts"
import { llamaFamily } from "../../plugins/models/llama/family.ts"
import { deviceBudget, checkFits } from "../../plugins/models/memory.ts"

const [dir, tokensFile, kv] = process.argv.slice(2)
if (kv !== undefined && kv !== "f32" && kv !== "f16" && kv !== "bf16") throw new Error(`score-child: kv dtype must be f32, f16 or bf16, got "${kv}"`)
const tokens = JSON.parse(readFileSync(tokensFile!, "utf8")) as number[]
const rt = await acquireRuntime()
const m = llamaFamily.inspect(dir!)
checkFits(llamaFamily, m, tokens.length, deviceBudget(rt))
const model = await llamaFamily.load(rt, m)
const weightBytes = rt.stats.liveBytes
const logprobs = await model.logprobs(tokens, { rope: m.rope(tokens.length), ...(kv === undefined ? {} : { kvCache: kv }) })
const rss = Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024
console.log(JSON.stringify({ logprobs: Array.from(logprobs), rss, weightBytes, peakDeviceBytes: rt.stats.peakBytes }))
model.dispose()
rt.destroy()
