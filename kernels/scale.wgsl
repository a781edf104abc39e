// In-place elementwise helpers for training: x ← s·x (scale), x ← x + s·y (axpy: gradient
// accumulation, LoRA merges), x ← s (fill: zeroing gradients; scale by 0 would keep NaNs).
struct Params {
  n: u32,  // elements in units of the entry point's element
  s: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read_write> x4: array<vec4f>;
@group(0) @binding(2) var<storage, read> y4: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> x1: array<f32>;
@group(0) @binding(2) var<storage, read> y1: array<f32>;

@compute @workgroup_size(64)
fn scale4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) { x4[i] = x4[i] * u.s; }
}

@compute @workgroup_size(64)
fn scale1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) { x1[i] = x1[i] * u.s; }
}

@compute @workgroup_size(64)
fn axpy4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) { x4[i] = x4[i] + u.s * y4[i]; }
}

@compute @workgroup_size(64)
fn axpy1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) { x1[i] = x1[i] + u.s * y1[i]; }
}

@compute @workgroup_size(64)
fn fill4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) { x4[i] = vec4f(u.s); }
}

@compute @workgroup_size(64)
fn fill1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) { x1[i] = u.s; }
}
