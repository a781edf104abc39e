// GELU, exact form (torch's default, GPT-NeoX's "gelu"): 0.5·x·(1 + erf(x/√2)).
// WGSL has no erf: Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7, with erf(−x) = −erf(x); its exp(−z²)
// only underflows (to 0, where erf is 1 anyway), never overflows.
struct Params { n: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x4: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> y4: array<vec4f>;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read_write> y1: array<f32>;

fn erf4(x: vec4f) -> vec4f {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * z);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-z * z));
}

fn gelu4(x: vec4f) -> vec4f {
  return 0.5 * x * (1.0 + erf4(x * 0.70710678118654752));
}

@compute @workgroup_size(64)
fn main4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.n; i += nwg.x * 64u) { y4[i] = gelu4(x4[i]); }
}

@compute @workgroup_size(64)
fn main1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.n; i += nwg.x * 64u) { y1[i] = gelu4(vec4f(x1[i])).x; }
}
