// Cross-entropy / log-softmax backward: for loss = −Σ_t w_t·logprob_t(target_t),
//   dlogits[t, v] = (softmax(logits[t])[v] − [v == target_t])·w_t.
// The row's logsumexp comes from logprobs.ts (logsumexpRows); exp(x − lse) ≤ 1 never overflows.
// Rows with w_t = 0 (masked labels) give exact zeros, whatever their logits. Targets ≥ V have no one-hot.
// The wrapper prepends `alias VT = vec4f|f32;` (vec4 when V % 4 == 0).
struct Params {
  n: u32,    // rows·cols
  cols: u32, // V in units of VT
  lanes: u32, // scalars per VT: 4 or 1
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<VT>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
@group(0) @binding(5) var<storage, read_write> dlogits: array<VT>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = gid.x; e < p.n; e += nwg.x * 64u) {
    let row = e / p.cols;
    let c = e - row * p.cols;
    let w = weights[row];
    // Scalar index of each lane: c·lanes + (0, 1, 2, 3) for vec4.
    let idx = VT(f32(c * p.lanes)) + LANE_OFFSETS;
    let hot = select(VT(0.0), VT(1.0), idx == VT(f32(targets[row])));
    let g = (exp(logits[e] - lse[row]) - hot) * w;
    dlogits[e] = select(g, VT(0.0), w == 0.0);
  }
}
