// Sum of squares over many tensors, deterministic: each tensor's dispatch writes one partial per
// workgroup (fixed workgroup count, fixed tree order) into its own slots of `partials`; one workgroup
// then folds all partials in a fixed order. Same inputs → same bits, whatever else is in the batch.
struct Params {
  n: u32,     // elements in units of the entry point's element (vec4 or f32); for `total`, partial count
  slot: u32,  // first slot of this tensor in `partials`
}

@group(0) @binding(0) var<uniform> u: Params;

@group(0) @binding(1) var<storage, read> x4: array<vec4f>;
@group(0) @binding(1) var<storage, read> x1: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;

// For `total`: the partials in, one value out.
@group(0) @binding(1) var<storage, read> partialsIn: array<f32>;
@group(0) @binding(2) var<storage, read_write> result: array<f32>;

var<workgroup> acc: array<f32, 64>;

// Fixed-shape tree over the 64 per-invocation sums; every invocation reaches every barrier.
fn treeReduce(li: u32) {
  workgroupBarrier();
  for (var k = 32u; k > 0u; k >>= 1u) {
    if (li < k) { acc[li] = acc[li] + acc[li + k]; }
    workgroupBarrier();
  }
}

@compute @workgroup_size(64)
fn partial4(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  var s = vec4f(0.0);
  for (var i = wid.x * 64u + li; i < u.n; i += nwg.x * 64u) {
    let x = x4[i];
    s = s + x * x;
  }
  acc[li] = (s.x + s.y) + (s.z + s.w);
  treeReduce(li);
  if (li == 0u) { partials[u.slot + wid.x] = acc[0]; }
}

@compute @workgroup_size(64)
fn partial1(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  var s = 0.0;
  for (var i = wid.x * 64u + li; i < u.n; i += nwg.x * 64u) {
    let x = x1[i];
    s = s + x * x;
  }
  acc[li] = s;
  treeReduce(li);
  if (li == 0u) { partials[u.slot + wid.x] = acc[0]; }
}

@compute @workgroup_size(64)
fn total(@builtin(local_invocation_index) li: u32) {
  var s = 0.0;
  for (var i = li; i < u.n; i += 64u) { s = s + partialsIn[i]; }
  acc[li] = s;
  treeReduce(li);
  if (li == 0u) { result[0] = acc[0]; }
}
