// Causal self-attention for training (no KV cache), FA2 style: the forward also writes each row's
// logsumexp, and the backward recomputes P = exp(s − lse) from Q and K instead of storing T×T.
//   D_i   = dO_i·O_i                                        (`rowDot`)
//   dQ_i  = scale·Σ_j P_ij (dO_i·V_j − D_i) K_j               (`dq`: one invocation per query rows)
//   dK_j  = scale·Σ_{h in group} Σ_i P_ij (dO_i·V_j − D_i) Q_i (`dkdv`: one invocation per key rows;
//   dV_j  = Σ_{h in group} Σ_i P_ij dO_i                       the GQA sum stays inside one invocation)
// No atomics anywhere, so results are deterministic. Masks: causal (key ≤ query) and, when
// `segmented`, same document (SEG[key] == SEG[query]) for packed sequences; document ids must be
// non-decreasing (each document one contiguous run), which lets the loops skip other documents.
//
// Template: attention-backward.ts fills in the //% lines with unrolled code (llvmpipe keeps only named
// locals in registers). An invocation owns ROWS rows (base + lane + 8·t, so neighbouring lanes have
// neighbouring causal limits) and streams the other side's rows straight from storage, STEP per loop
// iteration: every streamed component loaded feeds ROWS rows, and every row's state
// (spilled past the registers) loaded feeds STEP streamed rows. Scores are in base 2 (q scaled by
// scale·log2 e), lse is stored in natural log.
// The other way round (the workgroup's rows shared by its lanes, each lane streaming its own rows of the
// other side, the lanes' partial sums added through workgroup memory) was measured slower on llvmpipe for
// all three kernels (its best tiling 1.06–1.34× the time of these at d 32, T 1024) and slower to compile,
// most likely as a row loaded once for all 8 lanes costs one load, a row per lane eight, while the
// accumulators stay one set per lane either way.

struct Params {
  T: u32,
  heads: u32,
  group: u32,     // query heads per kv head
  qStride: u32,   // vec4s per q/o row (heads·headDim/4)
  kvStride: u32,  // vec4s per k/v row (kvHeads·headDim/4)
  segmented: u32, // 1: SEG holds document ids; 0: SEG is a dummy binding
  scale2: f32,    // softmax scale · log2(e)
  scale: f32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<vec4f>;
@group(0) @binding(2) var<storage, read> K: array<vec4f>;
@group(0) @binding(3) var<storage, read> V: array<vec4f>;
@group(0) @binding(4) var<storage, read> SEG: array<u32>;
// forward
@group(0) @binding(5) var<storage, read_write> O: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> LSEout: array<f32>; // [T, heads]
// dq, dkdv
@group(0) @binding(5) var<storage, read> DO: array<vec4f>;
@group(0) @binding(6) var<storage, read> LSE: array<f32>;
@group(0) @binding(7) var<storage, read> DD: array<f32>; // D_i, [T, heads]
@group(0) @binding(8) var<storage, read_write> DQ: array<vec4f>;
@group(0) @binding(8) var<storage, read_write> DK: array<vec4f>;
@group(0) @binding(9) var<storage, read_write> DV: array<vec4f>;
// rowDot
@group(0) @binding(1) var<storage, read> rdDO: array<vec4f>;
@group(0) @binding(2) var<storage, read> rdO: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> rdD: array<f32>;

// The streamed operands (K and V for forward and dq, Q and dO for dkdv): vec4 `c` of row `r`, from
// storage or from an rgba32float texture (the wrapper's choice; textures are the faster path on llvmpipe).
//% STREAM

const D4: u32 = 0u;   //% D4
const ROWS: u32 = 0u; //% ROWS
const STEP: u32 = 0u; //% STEP
const NEG: f32 = -3.0e38; // masked score: finite, so max/sub never meet inf − inf
const LN2: f32 = 0.6931471805599453;
const LOG2E: f32 = 1.4426950408889634;

// Segment id of row r, or 0 when unsegmented (then every row is in one document).
fn seg(r: u32) -> u32 {
  return select(0u, SEG[r], P.segmented == 1u);
}

// First row of r's document (0 when unsegmented). Documents are contiguous runs (ids non-decreasing), so keys before it are
// masked for every query at or after r: loops start there, and packed sequences cost Σ len², not T².
fn docStart(r: u32) -> u32 {
  if (P.segmented == 0u) { return 0u; }
  let s = SEG[r];
  var j = r;
  while (j > 0u && SEG[j - 1u] == s) { j--; }
  return j;
}

// One past the last row of r's document (T when unsegmented).
fn docEnd(r: u32) -> u32 {
  if (P.segmented == 0u) { return P.T; }
  let s = SEG[r];
  var i = r + 1u;
  while (i < P.T && SEG[i] == s) { i++; }
  return i;
}

@compute @workgroup_size(8)
fn forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let h = wg.y;
  let q0 = wg.x * 8u * ROWS;
  let qCol = h * D4;
  let kvCol = (h / P.group) * D4;
  let kEnd = min(q0 + 8u * ROWS, P.T); // keys up to the last query of the workgroup
  let kLast = kEnd - 1u;
  //% FWD_LOAD
  // Blocks of 4 keys start at multiples of 4 (keys before the document are masked), so every query's
  // keys are grouped the same way whatever the rows per invocation: results do not depend on it.
  for (var j = docStart(q0) & ~3u; j < kEnd; j += STEP) {
    // STEP keys (j0, j1, …, clamped to kLast, with segment ids s0, s1, …), in softmax updates of 4; keys
    // past kLast are masked for every query.
    //% FWD_BLOCK
  }
  //% FWD_STORE
}

// One invocation per (row, head): x along rows, y along heads.
@compute @workgroup_size(64)
fn rowDot(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x;
  if (t >= P.T) { return; }
  let e = t * P.heads + gid.y;
  let base = e * D4; // rows are heads·D4 vec4s, so (t, h) starts at (t·heads + h)·D4
  var acc = vec4f(0.0);
  for (var c = 0u; c < D4; c++) { acc += rdDO[base + c] * rdO[base + c]; }
  rdD[e] = (acc.x + acc.y) + (acc.z + acc.w);
}

@compute @workgroup_size(8)
fn dq(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let h = wg.y;
  let q0 = wg.x * 8u * ROWS;
  let qCol = h * D4;
  let kvCol = (h / P.group) * D4;
  let kEnd = min(q0 + 8u * ROWS, P.T);
  //% DQ_LOAD
  let kLast = kEnd - 1u;
  // STEP keys per iteration (j0, j1, …, clamped to kLast, with their segment ids s0, s1, …); keys past kLast
  // are masked for every query by causality.
  for (var j = docStart(q0); j < kEnd; j += STEP) {
    //% DQ_BLOCK
  }
  //% DQ_STORE
}

@compute @workgroup_size(8)
fn dkdv(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let hk = wg.y;
  let j0 = wg.x * 8u * ROWS; // first key row of the workgroup: earlier queries see none of its keys
  let kvCol = hk * D4;
  //% DKV_LOAD
  let iEnd = docEnd(min(j0 + 8u * ROWS, P.T) - 1u); // queries past the last key's document see none of these keys
  for (var g = 0u; g < P.group; g++) {
    let h = hk * P.group + g;
    let qCol = h * D4;
    // STEP queries per iteration (i0, i1, …, clamped to iEnd − 1, with ok0, ok1, … false past it, and
    // their segment ids, scaled lse and D_i); the clamped ones are masked.
    for (var i = j0; i < iEnd; i += STEP) {
      //% DKV_BLOCK
    }
  }
  //% DKV_STORE
}
