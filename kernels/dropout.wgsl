// Inverted dropout with a counter-based mask: out[i] = x[i]·scale where hash(i ^ hash(seed)) ≥ threshold,
// else 0. The mask is a function of (seed, i) alone, so the backward (and a recomputed forward) applies the
// same mask by calling this again with the same seed.
struct Params {
  n: u32,          // elements
  seed: u32,
  threshold: u32,  // floor(p · 2^32): the dropped fraction of the hash range
  scale: f32,      // 1 / (1 − p)
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// A 32-bit integer hash with full avalanche (Chris Wellons' "lowbias32").
fn mix32(v: u32) -> u32 {
  var h = v;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let key = mix32(u.seed);
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) {
    out[i] = select(0.0, x[i] * u.scale, mix32(i ^ key) >= u.threshold);
  }
}
