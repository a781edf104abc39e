// Repacks a strided matrix into a dense one with C4 vec4s per row, zero-padded:
// out[r, c] = src[off + r·sr + c·sc] for c < C and r < Rv, else 0. It feeds the llvmpipe kernel, which reads
// vec4s along rows (transposed operands, or K not a multiple of 4). O(R·C) beside the O(M·N·K) matmul.
struct Params { R: u32, C: u32, off: u32, sr: u32, sc: u32, C4: u32, Rv: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4f>;

fn at(r: u32, c: u32) -> f32 {
  if (c >= p.C || r >= p.Rv) { return 0.0; }
  return src[p.off + r * p.sr + c * p.sc];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.R * p.C4) { return; }
  let r = i / p.C4;
  let c = (i % p.C4) * 4u;
  dst[i] = vec4f(at(r, c), at(r, c + 1u), at(r, c + 2u), at(r, c + 3u));
}
