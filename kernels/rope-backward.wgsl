// RoPE backward: the forward is y = m·R(nθ)·x per pair, so dx = m·R(nθ)ᵀ·dy = m·R(−nθ)·dy. This kernel
// makes the inverse table for the forward kernel (rope.wgsl) by negating every 64-bit fixed-point turn
// fraction (θ/2π as hi·2^-32 + lo·2^-64) exactly in integers: the forward then computes
// (n·(−f)) mod 1 = −(n·f) mod 1, the same integer arithmetic as the forward angle to within one unit of
// 2^-32 turn (1.5e-9 rad) from the truncated low product. Scale m and start tokens are unchanged.
struct Params { entries: u32 } // vec4u count of the table: storedLayers · quads · 4

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4u>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4u>;

// Each quad entry is [hi, lo, origHi, origLo]: negate the (hi, lo) and (origHi, origLo) pairs.
// −(hi·2^32 + lo) mod 2^64 = (~hi + [lo == 0])·2^32 + (0 − lo).
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let e = gid.x * 2u; // even entries are hi words, odd ones lo words
  if (e >= p.entries) { return; }
  let hi = src[e];
  let lo = src[e + 1u];
  dst[e] = ~hi + select(vec4u(0u), vec4u(1u), lo == vec4u(0u));
  dst[e + 1u] = vec4u(0u) - lo;
}
