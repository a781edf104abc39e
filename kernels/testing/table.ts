/**
 * The kernel table: every op with its variants and cases. test/kernels/table.test.ts runs each case
 * under each variant on the adapter in use and compares it with its float64 reference; bench/ times the
 * same launchers at larger shapes. A new kernel adds its cases file under cases/ and one line here.
 */
import { adamwOp } from "./cases/adamw.ts"
import { addOp } from "./cases/add.ts"
import { attentionBackwardOp } from "./cases/attention-backward.ts"
import { attentionOp } from "./cases/attention.ts"
import { crossEntropyBackwardOp } from "./cases/cross-entropy-backward.ts"
import { embeddingBackwardOp } from "./cases/embedding-backward.ts"
import { embeddingOp } from "./cases/embedding.ts"
import { geluOp } from "./cases/gelu.ts"
import { layernormOp } from "./cases/layernorm.ts"
import { logprobsOp } from "./cases/logprobs.ts"
import { linearOp, matmulOp } from "./cases/matmul.ts"
import { rmsnormBackwardOp } from "./cases/rmsnorm-backward.ts"
import { rmsnormOp } from "./cases/rmsnorm.ts"
import { ropeBackwardOp } from "./cases/rope-backward.ts"
import { ropeOp } from "./cases/rope.ts"
import { scaleOp } from "./cases/scale.ts"
import { sumsqOp } from "./cases/sumsq.ts"
import { swigluBackwardOp } from "./cases/swiglu-backward.ts"
import { swigluOp } from "./cases/swiglu.ts"
import type { KernelOp } from "./kernel-case.ts"

export const KERNEL_TABLE: readonly KernelOp[] = [
  addOp,
  scaleOp,
  embeddingOp,
  rmsnormOp,
  layernormOp,
  ropeOp,
  linearOp,
  matmulOp,
  attentionOp,
  swigluOp,
  geluOp,
  logprobsOp,
  // Training.
  crossEntropyBackwardOp,
  swigluBackwardOp,
  rmsnormBackwardOp,
  ropeBackwardOp,
  attentionBackwardOp,
  embeddingBackwardOp,
  sumsqOp,
  adamwOp,
]
