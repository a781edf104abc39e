// One AdamW update on f32 master weights, torch.optim.AdamW (single-tensor path) semantics:
//   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//   p ← p − (lr/bc1) · m / (sqrt(v)/sqrt(bc2) + eps),   bc_k = 1 − β_k^t
// g = clip·grad: the global-norm clip coefficient rides along as a uniform, so clipping costs no extra
// pass over the gradients. Step-dependent scalars are computed on the host in float64, once per step.
// vec4 entry points when the length is a multiple of 4; grid-stride loops (≤ 65535 workgroups).
struct Params {
  n: u32,          // elements in units of the entry point's element
  decay: f32,      // 1 − lr·wd
  beta1: f32,
  beta2: f32,
  omb1: f32,       // 1 − β1
  omb2: f32,       // 1 − β2
  stepSize: f32,   // lr / bc1
  sqrtBc2: f32,    // sqrt(bc2)
  eps: f32,
  clip: f32,
}

@group(0) @binding(0) var<uniform> u: Params;

@group(0) @binding(1) var<storage, read_write> p4: array<vec4f>;
@group(0) @binding(2) var<storage, read> g4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> m4: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> v4: array<vec4f>;

@group(0) @binding(1) var<storage, read_write> p1: array<f32>;
@group(0) @binding(2) var<storage, read> g1: array<f32>;
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read_write> v1: array<f32>;

@compute @workgroup_size(64)
fn adamw4(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) {
    let g = g4[i] * u.clip;
    let m = u.beta1 * m4[i] + u.omb1 * g;
    let v = u.beta2 * v4[i] + u.omb2 * (g * g);
    m4[i] = m;
    v4[i] = v;
    p4[i] = p4[i] * u.decay - u.stepSize * (m / (sqrt(v) / u.sqrtBc2 + u.eps));
  }
}

@compute @workgroup_size(64)
fn adamw1(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = gid.x; i < u.n; i += nwg.x * 64u) {
    let g = g1[i] * u.clip;
    let m = u.beta1 * m1[i] + u.omb1 * g;
    let v = u.beta2 * v1[i] + u.omb2 * (g * g);
    m1[i] = m;
    v1[i] = v;
    p1[i] = p1[i] * u.decay - u.stepSize * (m / (sqrt(v) / u.sqrtBc2 + u.eps));
  }
}
