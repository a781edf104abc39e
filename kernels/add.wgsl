// Elementwise a + b. vec4 entry points when the length is a multiple of 4 (half the load cost per value
// on llvmpipe), scalar ones otherwise. Grid-stride loops: dispatches are capped at 65535 workgroups.
struct Params { n: u32 }  // elements in units of the entry point's array element

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> a4: array<vec4f>;
@group(0) @binding(2) var<storage, read> b4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4f>;

@group(0) @binding(1) var<storage, read> a1: array<f32>;
@group(0) @binding(2) var<storage, read> b1: array<f32>;
@group(0) @binding(3) var<storage, read_write> out1: array<f32>;

// In place: a lives in the read_write slot.
@group(0) @binding(1) var<storage, read_write> acc4: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> acc1: array<f32>;

@compute @workgroup_size(64)
fn add4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.n; i += nwg.x * 64u) { out4[i] = a4[i] + b4[i]; }
}

@compute @workgroup_size(64)
fn add1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.n; i += nwg.x * 64u) { out1[i] = a1[i] + b1[i]; }
}

@compute @workgroup_size(64)
fn addInPlace4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.n; i += nwg.x * 64u) { acc4[i] = acc4[i] + b4[i]; }
}

@compute @workgroup_size(64)
fn addInPlace1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < p.n; i += nwg.x * 64u) { acc1[i] = acc1[i] + b1[i]; }
}
