// C[M, 4·N4] = A[M,K]·B[K, 4·N4] + bias, for llvmpipe (Mesa's CPU driver).
// llvmpipe runs 8 invocations as one SIMD vector along x but loads memory one lane at a time, so speed is
// set by FMAs per loaded value: each invocation keeps a $TM×16 block of C in named vec4 locals (spills
// are cheap whole-vector moves; per-lane loads are not) and reads A and B directly, with no workgroup
// memory (it costs as much as storage there, plus barriers).
// Layout contract (the wrapper pads): A is [M rows, K/4 vec4s] and B [K rows, N4 vec4s], each an
// rgba32float texture or a vec4 storage array (the wrapper fills in declarations and loads; textures are
// the faster path: ~20% for A, ~25% for B), both zero-padded to 4 along K. N4 is a multiple of 4 and
// C, B and bias hold every column of every block, so only rows need a guard: per-output guards, or
// loading C to accumulate, made LLVM compile 2–10× longer (the wrapper adds into C in a separate pass).
// The wrapper unrolls this template: a line naming i, j or q in braces repeats for i < TM, j < 4,
// q < 4 (Q in braces = "xyzw"[q]).
struct Params {
  M: u32, N4: u32, K4: u32, lda: u32, // strides and offsets in vec4s
  ldb: u32, ldc: u32, c0: u32, biasOff: u32, // c0, biasOff: where C and bias start
}
@group(0) @binding(0) var<uniform> p: Params;
$A_DECL
$B_DECL
@group(0) @binding(3) var<storage, read> bias: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> c: array<vec4f>;

// rowBase: the row's first vec4 in a storage A (row·lda), or the row itself in a texture (lda = 1).
fn loadA(rowBase: u32, k4: u32) -> vec4f {
  return $A_LOAD;
}

fn loadB(col4: u32, row: u32) -> vec4f {
  return $B_LOAD;
}

fn storeRow(r: u32, at: u32, v0: vec4f, v1: vec4f, v2: vec4f, v3: vec4f) {
  if (r < p.M) {
    c[at] = v0;
    c[at + 1u] = v1;
    c[at + 2u] = v2;
    c[at + 3u] = v3;
  }
}

@compute @workgroup_size($WX, $WY)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let row = gid.y * $TMu;
  let col4 = gid.x * 4u;
  if (row >= p.M || col4 >= p.N4) { return; }
  let K4 = p.K4;
  // Rows past the edge are clamped rather than branched on; their results are never stored.
  let ar{i} = min(row + {i}u, p.M - 1u) * p.lda;
  let cr{i} = min(row + {i}u, p.M - 1u) * p.ldc + p.c0 + col4;
  var acc{i}_{j} = vec4f(0.0);
  for (var k = 0u; k < K4; k++) {
    let a{i} = loadA(ar{i}, k);
    let b{q}_{j} = loadB(col4 + {j}u, k * 4u + {q}u);
    acc{i}_{j} = fma(vec4f(a{i}.{Q}), b{q}_{j}, acc{i}_{j});
  }
  let bias{j} = bias[p.biasOff + col4 + {j}u];
  storeRow(row + {i}u, cr{i}, acc{i}_0 + bias0, acc{i}_1 + bias1, acc{i}_2 + bias2, acc{i}_3 + bias3);
}
