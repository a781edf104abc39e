// C[M, 4·N4] = op(A)·op(B) + bias, for llvmpipe (Mesa's CPU driver).
// llvmpipe runs 8 invocations as one SIMD vector along x but loads memory one lane at a time, so speed is
// set by FMAs per loaded value: each invocation keeps a TM×(4·TN4) block of C in named vec4 locals (spills
// are cheap whole-vector moves; per-lane loads are not) and reads A and B directly, with no workgroup
// memory (it costs as much as storage there, plus barriers).
//
// matmul.ts fills in the //% lines (cpuSource): the operands' declarations and the unrolled body for one
// variant. A variant is a tiling (TM, TN4, workgroup) plus where each operand comes from (an rgba32float
// texture or a vec4 storage array; textures are the faster path on llvmpipe) and how it is stored:
//   A: [M rows, K4 vec4s] (A row-major), or [4·K4 rows, M/4 vec4s] (Aᵀ stored row-major: "transA");
//   B: [4·K4 rows, N4 vec4s] (B row-major), or [N rows, K4 vec4s] (Bᵀ stored row-major: "transB").
// Whatever the variant, every output is the same chain acc = fma(a_k, b_k, acc) for k = 0, 1, … K−1 and
// then acc + bias: variants differ in tiling only, never in any output's summation order, so they give
// bit-identical results (tested). Transposed operands cost nothing extra: llvmpipe keeps each vec4
// component in its own SIMD register, so regrouping components is free.
// Operands are zero-padded along K to a multiple of 4. Rows and columns past the edge are clamped rather
// than branched on (their results land in padded columns or are never stored): C, bias and a row-major B
// hold every column of every block, so only rows need a guard at the store, once per row (per-output
// guards made LLVM compile 2–10× longer).
struct Params {
  M: u32, N4: u32, K4: u32, lda: u32, // strides and offsets in vec4s
  ldb: u32, ldc: u32, c0: u32, biasOff: u32, // c0, biasOff: where C and bias start
  aLast: u32, bLast: u32, _p0: u32, _p1: u32, // last row (row-major A, Bᵀ) or vec4 column (Aᵀ, B) stored
}
@group(0) @binding(0) var<uniform> p: Params;
//% DECL
@group(0) @binding(3) var<storage, read> bias: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4f>;

//% FUNCTIONS

@compute @workgroup_size(0) //% WORKGROUP
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let row = gid.y * TM;
  let col4 = gid.x * TN4;
  if (row >= p.M || col4 >= p.N4) { return; }
  //% SETUP
  for (var k = 0u; k < p.K4; k++) {
    //% STEP
  }
  //% STORE
}
