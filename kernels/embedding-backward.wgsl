// Embedding backward: dTable[id, :] += Σ_{t : ids[t] = id} dOut[t, :], deterministic without float atomics.
//
// `links` (pass 1, one invocation per token): link[t] = the next token with the same id (or T), and
// lead[t] = 1 when t is its id's first occurrence. O(T) id reads per token in the worst case (all ids
// distinct), O(T²) in all, independent of D and V.
// `scatter` (pass 2, one invocation per (leading token, column block)): walks its id's chain in token
// order and adds the rows into dTable. Only the leader writes a row, so no two invocations collide and
// the summation order is fixed.
// `rows` (the alternative when V·(D/BLOCK) < T, e.g. a byte-level vocabulary and a long sequence): one
// invocation per (table row, column block) scans all ids in token order; O(V·T) id reads in all. Both
// methods add in token order starting from dTable's value, so they give identical bits.
// The table may exceed one storage binding, so the host dispatches `scatter` once per row range
// [rowStart, rowEnd) bound at an offset. The wrapper prepends `alias VT = vec4f|f32;`.
struct Params {
  tokens: u32,
  cols: u32,     // D in units of VT
  rowStart: u32,
  rowEnd: u32,
  block: u32,    // columns (VT) per scatter invocation
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
// links
@group(0) @binding(2) var<storage, read_write> chainW: array<u32>; // [0, T): next; [T, 2T): lead
// scatter
@group(0) @binding(2) var<storage, read> chain: array<u32>;
@group(0) @binding(3) var<storage, read> dOut: array<VT>;
@group(0) @binding(4) var<storage, read_write> dTable: array<VT>;
// rows
@group(0) @binding(2) var<storage, read> rDOut: array<VT>;
@group(0) @binding(3) var<storage, read_write> rTable: array<VT>;

@compute @workgroup_size(64)
fn links(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x;
  if (t >= p.tokens) { return; }
  let id = ids[t];
  var lead = 1u;
  for (var s = t; s > 0u; s--) {
    if (ids[s - 1u] == id) { lead = 0u; break; }
  }
  var next = p.tokens;
  for (var s = t + 1u; s < p.tokens; s++) {
    if (ids[s] == id) { next = s; break; }
  }
  chainW[t] = next;
  chainW[p.tokens + t] = lead;
}

@compute @workgroup_size(64)
fn scatter(@builtin(global_invocation_id) gid: vec3u) {
  let t = gid.x;
  if (t >= p.tokens) { return; }
  let id = ids[t];
  if (chain[p.tokens + t] == 0u || id < p.rowStart || id >= p.rowEnd) { return; }
  let c0 = gid.y * p.block;
  let c1 = min(c0 + p.block, p.cols);
  let dst = (id - p.rowStart) * p.cols;
  for (var c = c0; c < c1; c++) {
    var acc = dTable[dst + c];
    for (var s = t; s < p.tokens; s = chain[s]) { acc += dOut[s * p.cols + c]; }
    dTable[dst + c] = acc;
  }
}

@compute @workgroup_size(64)
fn rows(@builtin(global_invocation_id) gid: vec3u) {
  let id = p.rowStart + gid.x;
  if (id >= p.rowEnd) { return; }
  let c0 = gid.y * p.block;
  let c1 = min(c0 + p.block, p.cols);
  let dst = gid.x * p.cols;
  for (var s = 0u; s < p.tokens; s++) {
    if (ids[s] == id) {
      for (var c = c0; c < c1; c++) { rTable[dst + c] = rTable[dst + c] + rDOut[s * p.cols + c]; }
    }
  }
}
