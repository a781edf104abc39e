// Token embedding lookup: out[t, :] = table[ids[t], :].
// The table may be larger than one storage binding (128 MiB on llvmpipe: a 32000×4096 f32 table is
// 500 MiB), so the host dispatches once per row range [rowStart, rowEnd) bound at an offset, and each
// dispatch writes only the tokens whose id falls in its range. Ids ≥ vocab give a zero row.
// An invocation copies a block of BLOCK elements of one row, so the id is loaded once per block and
// invocations of tokens outside the dispatch's range leave after that one load. A 16-bit table (the
// weights' file dtype) is read as u32 words of two values (element 2i in the low half) and widened
// exactly: bf16 by shifts, f16 by unpack2x16float.
struct Params {
  n: u32,        // T·blocks
  cols: u32,     // D in units of the entry's element (vec4 or f32)
  blocks: u32,   // ceil(cols / BLOCK)
  rowStart: u32,
  rowEnd: u32,
  vocab: u32,
  last: u32,     // 1 on the dispatch that zeroes out-of-vocabulary rows
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4f>;
@group(0) @binding(2) var<storage, read> table1: array<f32>;
@group(0) @binding(3) var<storage, read_write> out1: array<f32>;
@group(0) @binding(2) var<storage, read> tableH: array<u32>;
@group(0) @binding(3) var<storage, read_write> out2: array<vec2f>;

const BLOCK = 8u;

// Work item e: elements [c0, c1) of token t's row, at dst in out. `copy`: its id falls in this dispatch's
// range, and the row starts at src in the bound table; `zero`: its id is out of vocabulary and this is the
// dispatch that zeroes such rows.
struct Block { dst: u32, src: u32, c0: u32, c1: u32, copy: bool, zero: bool }

fn block(e: u32) -> Block {
  let t = e / p.blocks;
  let c0 = (e - t * p.blocks) * BLOCK;
  let id = ids[t];
  let copy = id >= p.rowStart && id < p.rowEnd;
  let src = select(0u, (id - p.rowStart) * p.cols, copy);
  return Block(t * p.cols, src, c0, min(c0 + BLOCK, p.cols), copy, !copy && id >= p.vocab && p.last == 1u);
}

@compute @workgroup_size(64)
fn main4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < p.n; e += nwg.x * 64u) {
    let b = block(e);
    if (b.copy) {
      for (var c = b.c0; c < b.c1; c++) { out4[b.dst + c] = table4[b.src + c]; }
    } else if (b.zero) {
      for (var c = b.c0; c < b.c1; c++) { out4[b.dst + c] = vec4f(0.0); }
    }
  }
}

@compute @workgroup_size(64)
fn main1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < p.n; e += nwg.x * 64u) {
    let b = block(e);
    if (b.copy) {
      for (var c = b.c0; c < b.c1; c++) { out1[b.dst + c] = table1[b.src + c]; }
    } else if (b.zero) {
      for (var c = b.c0; c < b.c1; c++) { out1[b.dst + c] = 0.0; }
    }
  }
}

fn bf16x2(w: u32) -> vec2f { return vec2f(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
fn f16x2(w: u32) -> vec2f { return unpack2x16float(w); }

// cols: words per row (D/2)
@compute @workgroup_size(64)
fn main_bf16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < p.n; e += nwg.x * 64u) {
    let b = block(e);
    if (b.copy) {
      for (var c = b.c0; c < b.c1; c++) { out2[b.dst + c] = bf16x2(tableH[b.src + c]); }
    } else if (b.zero) {
      for (var c = b.c0; c < b.c1; c++) { out2[b.dst + c] = vec2f(0.0); }
    }
  }
}

@compute @workgroup_size(64)
fn main_f16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < p.n; e += nwg.x * 64u) {
    let b = block(e);
    if (b.copy) {
      for (var c = b.c0; c < b.c1; c++) { out2[b.dst + c] = f16x2(tableH[b.src + c]); }
    } else if (b.zero) {
      for (var c = b.c0; c < b.c1; c++) { out2[b.dst + c] = vec2f(0.0); }
    }
  }
}

// The lookup from a linear layer's prepared weight W [V, D] (kernels/matmul.ts), for a head tied to the
// embeddings: the table is then held once, as the head. A weight is stored transposed, Wᵀ [Kpadded, width]
// per part of vocabulary rows [n0, n1), so token t's row is column id - n0 of its part, read down D rows:
// a texture (f32 and f16: 4 values a texel, the f16 ones widened by the texture unit; bf16: rgba32uint,
// 8 values a texel) or a buffer (f32, or u32 words of two 16-bit values, the even column in the low half).
// One dispatch per part, as for the row ranges above; every value is widened exactly, so the rows are the
// bits `embed` gives from the table itself.
struct WeightParams {
  n: u32,      // T·blocks
  d: u32,      // D
  blocks: u32, // ceil(D / BLOCK)
  n0: u32,
  n1: u32,
  vocab: u32,
  last: u32,   // 1 on the dispatch that zeroes out-of-vocabulary rows
  width: u32,  // values per stored row of a buffer part
}

@group(0) @binding(0) var<uniform> q: WeightParams;
@group(0) @binding(2) var texF: texture_2d<f32>;
@group(0) @binding(2) var texU: texture_2d<u32>;

// An invocation's token, its block of D, and the column of its id in this part (-1: another part's, or
// out of vocabulary: then the dispatch marked `last` has zeroed the block already).
struct Job { t: u32, d0: u32, d1: u32, col: i32 }

fn job(e: u32) -> Job {
  let t = e / q.blocks;
  let d0 = (e - t * q.blocks) * BLOCK;
  let d1 = min(d0 + BLOCK, q.d);
  let id = ids[t];
  if (id >= q.n0 && id < q.n1) { return Job(t, d0, d1, i32(id - q.n0)); }
  if (id >= q.vocab && q.last == 1u) {
    for (var d = d0; d < d1; d++) { out1[t * q.d + d] = 0.0; }
  }
  return Job(t, d0, d1, -1);
}

@compute @workgroup_size(64)
fn weight_texture4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < q.n; e += nwg.x * 64u) {
    let j = job(e);
    if (j.col < 0) { continue; }
    let c = u32(j.col);
    for (var d = j.d0; d < j.d1; d++) { out1[j.t * q.d + d] = textureLoad(texF, vec2u(c >> 2u, d), 0)[c & 3u]; }
  }
}

@compute @workgroup_size(64)
fn weight_texture_bf16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < q.n; e += nwg.x * 64u) {
    let j = job(e);
    if (j.col < 0) { continue; }
    let c = u32(j.col);
    for (var d = j.d0; d < j.d1; d++) {
      let w = textureLoad(texU, vec2u(c >> 3u, d), 0)[(c >> 1u) & 3u];
      out1[j.t * q.d + d] = bf16x2(w)[c & 1u];
    }
  }
}

@compute @workgroup_size(64)
fn weight_buffer_f32(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < q.n; e += nwg.x * 64u) {
    let j = job(e);
    if (j.col < 0) { continue; }
    let c = u32(j.col);
    for (var d = j.d0; d < j.d1; d++) { out1[j.t * q.d + d] = table1[d * q.width + c]; }
  }
}

@compute @workgroup_size(64)
fn weight_buffer_bf16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < q.n; e += nwg.x * 64u) {
    let j = job(e);
    if (j.col < 0) { continue; }
    let c = u32(j.col);
    for (var d = j.d0; d < j.d1; d++) { out1[j.t * q.d + d] = bf16x2(tableH[(d * q.width + c) >> 1u])[c & 1u]; }
  }
}

@compute @workgroup_size(64)
fn weight_buffer_f16(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < q.n; e += nwg.x * 64u) {
    let j = job(e);
    if (j.col < 0) { continue; }
    let c = u32(j.col);
    for (var d = j.d0; d < j.d1; d++) { out1[j.t * q.d + d] = f16x2(tableH[(d * q.width + c) >> 1u])[c & 1u]; }
  }
}
