// Causal flash attention for llvmpipe ("cpu" profile). Template: attention.ts fills in the //% lines
// with fully unrolled code, since llvmpipe keeps only named locals in registers (indexed private
// arrays go through memory) and every K/V component loaded must feed as many FMAs as possible.
//
// One invocation owns ROWS query rows of one head (q0 + lane + 8·t, so neighbouring lanes have
// neighbouring causal limits) and streams that head's K/V rows straight from storage, 4 keys per
// online-softmax update. No workgroup memory: on llvmpipe it costs as much as storage and adds barriers.
// Scores are kept in base 2 (q is pre-scaled by scale·log2 e) so exp2 replaces exp.
//
// Key windows (the cache's pages, or texture-sized parts of them): one dispatch per window, each leaving its unnormalised output and
// (max, sum) for the next to continue from, so a paged cache gives the bits one pass over all keys gives.

//% PARAMS

// K and V rows (relative to the window's first) as vec4 `c` of row `r`: from the storage bindings, or from
// rgba32float textures holding the window's rows (the wrapper's choice; textures load faster on llvmpipe).
//% STREAM

const D4: u32 = 0u;   //% D4
const ROWS: u32 = 0u; //% ROWS

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let h = wg.y;
  let heads = P.qStride / D4;
  let q0 = wg.x * 8u * ROWS;
  let qCol = h * D4;
  let kvCol = (h / P.group) * D4;
  // Keys this workgroup needs from this window: up to its last valid query (uniform across lanes).
  let kEnd = min(P.queryOffset + min(q0 + 8u * ROWS, P.tq), P.kStop);
  let kLast = max(kEnd, 1u) - 1u;
  //% LOAD_Q
  for (var j = P.kStart; j < kEnd; j += 4u) {
    // Rows past kLast are masked for every query; clamping only keeps the reads in bounds.
    let r0 = min(j, kLast) - P.kStart;
    let r1 = min(j + 1u, kLast) - P.kStart;
    let r2 = min(j + 2u, kLast) - P.kStart;
    let r3 = min(j + 3u, kLast) - P.kStart;
    //% BLOCK
  }
  //% STORE
}
