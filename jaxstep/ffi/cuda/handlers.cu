// CUDA handlers: warps and threads over items, calling the shared kernel math in kernels.h, on XLA's stream.
#include <cuda_runtime.h>

#include "jaxstep/ffi/buffers.h"

namespace jaxstep {
namespace {

constexpr int BLOCK = 256;
constexpr int WARPS = BLOCK / 32;  // a block's warps
constexpr unsigned ALL = 0xffffffffu;  // every lane of a warp, for the warp intrinsics

long blocks_for(long n) { return (n + BLOCK - 1) / BLOCK; }

ffi::Error launch_status() {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("CUDA launch failed: ") + cudaGetErrorString(err));
}

// Division by a divisor fixed for a launch, as a multiply-high, an add and a shift (Granlund and Montgomery):
// exact for dividends below 2^31, which the launches check. A general integer division costs about twenty
// instructions on a GPU, and each warp of the render kernel needs three.
struct Divisor {
  unsigned d, mul, shift;
  __device__ unsigned operator()(unsigned x) const { return (__umulhi(x, mul) + x) >> shift; }
};

Divisor divisor(long d) {
  unsigned shift = 0;
  while ((1ull << shift) < (unsigned long long)d) shift++;
  const auto mul = (1ull << 32) * ((1ull << shift) - d) / d + 1;
  return {(unsigned)d, (unsigned)mul, shift};
}

constexpr long MAX_DIVIDEND = 1l << 31;

// How a warp finds its rays' hits:
// - WARP: it culls all of its view's lines against its wedge of rays, 32 a round (consider_lines);
// - GRID: it does so in passes through the grid's lists (see Pass), for geometries of many walls (search_grid);
// - BLOCK: a block per view, its warps taking 8 consecutive chunks of rays at a time; the block culls the view's
//   lines against the view's wedge once (or, for views of over BLOCK lines, against 8 chunks' wedge for each 8),
//   into shared memory, and each warp culls only those (consider_block_lines). Each warp works out the view's part
//   of its rays (WarpRays) once for all its chunks.
enum class Search { WARP, GRID, BLOCK };

// The blocks of a view kernel each SM holds at least (__launch_bounds__): 4, at most 64 registers a thread, so
// that more warps hide the latency of the loads; 5 (48 registers, a few spilled) for the block search, whose
// warps also wait at its barriers. Measured on an H200 (Deathmatch, 65536 envs): 54.3 M frames/s with 5 against
// 51.6 M with 4; 6 blocks (40 registers) spill twice as much.
constexpr int blocks_per_sm(Search search) { return search == Search::BLOCK ? 5 : 4; }

// A warp's share of the rays: `chunk` (at most 32) consecutive rays of one view, lane l taking ray first + l. When
// the search goes through the grid, the view's scene holds the walls and grid only, and `shaded` adds the lights
// and texels afterwards, so that their pointers take no registers during the search; otherwise it is whole from
// the start, its loads issued with the others.
struct WarpRays {
  long v;               // the view
  int first, last, r;   // the warp's rays are first .. last-1; the lane's is r (past last: it only helps)
  int block_first, block_last;  // the block's rays (Search::BLOCK)
  bool first_chunk;             // the warp's first chunk of the view (Search::BLOCK)
  bool wanted;          // the view is wanted (the mask)
  unsigned b;           // the view's batch element
  int g;                // and geometry
  View view;
  Viewpoint eye;
};

// The rays of chunk c (of `chunk` rays) of a view of R.
__device__ __forceinline__ WarpRays at_chunk(WarpRays w, int c, int chunk, int R, int lane) {
  w.first = c * chunk;
  w.last = min(w.first + chunk, R);
  w.r = w.first + lane;
  w.block_first = c / WARPS * WARPS * chunk;
  w.block_last = min(w.block_first + WARPS * chunk, R);
  w.first_chunk = c < WARPS;
  return w;
}

// The warp's rays, chunk c of view v. per_env: views; per_batch: envs.
template <Search S>
__device__ __forceinline__ WarpRays warp_rays(const SceneryArrays& s, const float* angles, const float* positions,
                                              const bool* mask, int n_agents, int R, int chunk, unsigned v, int c,
                                              Divisor per_env, Divisor per_batch, int lane) {
  const unsigned e = per_env(v), b = per_batch(e);
  const int agent = (int)(v - e * per_env.d);
  // the loads everything else waits on, written first so that they go out together with the scene's
  const bool wanted = mask[v];
  const long i = (long)e * n_agents + agent;
  const float angle = angles[i];
  const Vec p = load_vec(positions + 2 * i);
  const int g = s.env_geometry[e];
  const EnvScene scene = S == Search::GRID ? geometry_walls(s, b, g) : geometry_scene(s, b, g);
  const View view = {scene, angles + i - agent, positions + 2 * (i - agent), agent};
  const WarpRays w = {(long)v, 0, 0, 0, 0, 0, false, wanted, b, g, view, {p, rotation(angle)}};
  return at_chunk(w, c, chunk, R, lane);
}

// The view and chunks a warp takes: without Search::BLOCK, chunk w % chunks of view w / chunks (per_view:
// chunks); with it, block v takes view v, its warp j chunks j, j + WARPS, ... (a multiple of WARPS in all).
struct WarpWork {
  unsigned v;
  int first, end;  // chunks first, first + WARPS, ... before end
};

template <Search S>
__device__ __forceinline__ WarpWork warp_work(long w, Divisor per_view) {
  if (S == Search::BLOCK) return {blockIdx.x, (int)(threadIdx.x / 32), (int)per_view.d};
  const unsigned v = per_view(w);
  const int c = (int)(w - v * per_view.d);
  return {v, c, c + 1};
}

// The warp's view with its lights and texels, for shading.
template <Search S>
__device__ __forceinline__ View shaded(const SceneryArrays& s, const WarpRays& w) {
  if (S != Search::GRID) return w.view;
  return {with_shading(s, w.b, w.g, w.view.scene), w.view.angles, w.view.positions, w.view.agent};
}

// Every lane's ray considers n lines in order; line_of(i, &a, &b) gives line i's index in the env's line order and
// its ends, or -1 to skip it. Lanes take 32 lines a round and keep those that may meet the warp's wedge of rays
// inside the box `near` (where `bounded`), then every lane considers the kept lines in order, their ends passed
// round by shuffles. Every lane of the warp must call it.
template <typename LineOf>
__device__ __forceinline__ void consider_lines(int n, LineOf line_of, const Wedge& wedge, bool bounded, Box near,
                                               const Ray& ray, int lane, RayHit* best, float* best_s, bool* tied) {
  for (int base = 0; base < n; base += 32) {
    Vec a = {0.f, 0.f}, b = {0.f, 0.f};
    const int index = base + lane < n ? line_of(base + lane, &a, &b) : -1;
    const bool kept_line = (index >= 0) && may_hit(wedge, a, b) && !(bounded && outside(near, a, b));
    unsigned kept = __ballot_sync(ALL, kept_line);
    while (kept) {
      const int k = __ffs(kept) - 1;
      kept &= kept - 1;
      const Vec ka = {__shfl_sync(ALL, a.x, k), __shfl_sync(ALL, a.y, k)};
      const Vec kb = {__shfl_sync(ALL, b.x, k), __shfl_sync(ALL, b.y, k)};
      consider_line(ray.p, ray.u, ray.near, __shfl_sync(ALL, index, k), ka, kb, best, best_s, tied);
    }
  }
}

// A block's list of its view's lines that may meet a wedge, in line order (Search::BLOCK): their indices in the
// env's line order, their ends, and how many each warp's threads kept.
struct BlockLines {
  int index[BLOCK];
  float4 ends[BLOCK];
  int warp_kept[WARPS];
};

__device__ __forceinline__ BlockLines& block_lines() {
  __shared__ BlockLines lines;
  return lines;
}

// The length of the block's list.
__device__ __forceinline__ int block_kept(const BlockLines& lines) {
  int total = 0;
  for (int j = 0; j < WARPS; j++) total += lines.warp_kept[j];
  return total;
}

// Lists lines base .. base + BLOCK - 1 of the view's n (line_of as for consider_lines) that may meet `wedge`, a
// thread each, and returns the list's length. Every thread of the block must call it. The list may be read once it
// returns; the next call writes it only after its first barrier, which every warp reaches only once it has read
// this list, and each warp_kept count is read before the second barrier, so no other barrier is needed between
// calls.
template <typename LineOf>
__device__ __forceinline__ int keep_block_lines(BlockLines& lines, int base, int n, LineOf line_of,
                                                const Wedge& wedge, int lane) {
  const int warp = threadIdx.x / 32;
  Vec a = {0.f, 0.f}, b = {0.f, 0.f};
  const int i = base + threadIdx.x;
  const int index = i < n ? line_of(i, &a, &b) : -1;
  const bool keep = (index >= 0) && may_hit(wedge, a, b);
  const unsigned ballot = __ballot_sync(ALL, keep);
  if (lane == 0) lines.warp_kept[warp] = __popc(ballot);
  __syncthreads();
  int before = 0;  // kept lines of the warps before this one
  for (int j = 0; j < warp; j++) before += lines.warp_kept[j];
  if (keep) {
    const int slot = before + __popc(ballot & ((1u << lane) - 1));
    lines.index[slot] = index;
    lines.ends[slot] = make_float4(a.x, a.y, b.x, b.y);
  }
  const int total = block_kept(lines);
  __syncthreads();
  return total;
}

// Every lane's ray considers, in order, those of the list's first `total` lines that may meet the warp's wedge
// (consider_lines over the list, their ends read from shared memory). Every lane of the warp must call it.
__device__ __forceinline__ void consider_listed(const BlockLines& lines, int total, const Wedge& wedge,
                                                const Ray& ray, int lane, RayHit* best, float* best_s) {
  for (int first = 0; first < total; first += 32) {
    const int j = first + lane;
    const float4 e = j < total ? lines.ends[j] : make_float4(0.f, 0.f, 0.f, 0.f);
    unsigned kept = __ballot_sync(ALL, (j < total) && may_hit(wedge, {e.x, e.y}, {e.z, e.w}));
    while (kept) {
      const int k = first + __ffs(kept) - 1;
      kept &= kept - 1;
      const float4 ke = lines.ends[k];  // the same address in every lane: one broadcast read
      consider_line(ray.p, ray.u, ray.near, lines.index[k], {ke.x, ke.y}, {ke.z, ke.w}, best, best_s, nullptr);
    }
  }
}

// consider_lines for a block whose warps share one view (Search::BLOCK), over its n lines. The block lists the
// lines that may meet `block_wedge` (keep_block_lines); each warp then considers those that may meet its own.
// The lines and their culling are computed once for the block's 8 warps rather than by each. A view whose lines
// fit in one list (at most BLOCK) is listed once, against the whole view's wedge, on the warps' first chunk
// (`first_chunk`), and the list serves their later chunks too; a larger one is listed BLOCK lines at a time,
// against the 8 chunks' wedge, for each chunk. Every thread of the block must call it.
template <typename LineOf>
__device__ __forceinline__ void consider_block_lines(int n, LineOf line_of, const Wedge& view_wedge,
                                                     const Wedge& block_wedge, bool first_chunk,
                                                     const Wedge& wedge, const Ray& ray, int lane, RayHit* best,
                                                     float* best_s) {
  BlockLines& lines = block_lines();
  if (n <= BLOCK) {
    const int total = first_chunk ? keep_block_lines(lines, 0, n, line_of, view_wedge, lane) : block_kept(lines);
    return consider_listed(lines, total, wedge, ray, lane, best, best_s);
  }
  for (int base = 0; base < n; base += BLOCK) {
    const int total = keep_block_lines(lines, base, n, line_of, block_wedge, lane);
    consider_listed(lines, total, wedge, ray, lane, best, best_s);
  }
}

// The nearest hit of the lane's ray. The agents' model lines come first in line order, so they are considered
// once; then the walls go in passes (see Pass), each starting from the model lines' result, until every ray of the
// warp has its final hit (one pass of every wall, but through the grid). Every lane of the warp must call it (with
// Search::BLOCK, every thread of the block).
template <Search S>
__device__ __forceinline__ RayHit cast(const WarpRays& w, int n_agents, int R, float half_width, float radius,
                                       int lane) {
  constexpr bool GRID = S == Search::GRID;
  const Ray ray = make_ray(w.eye, w.r, R, half_width, radius);
  const Wedge wedge = ray_wedge(w.eye, w.first, w.last, R, half_width);
  const View& view = w.view;
  const int first_wall = n_agents * MODEL_LINES;
  const auto model_line_of = [&](int i, Vec* a, Vec* b) {
    if (hidden_own_line(view, i, radius)) return -1;
    scene_line(view.scene, view.angles, view.positions, n_agents, i, a, b);
    return i;
  };
  if constexpr (S == Search::BLOCK) {
    const auto line_of = [&](int i, Vec* a, Vec* b) {
      if (i < first_wall) return model_line_of(i, a, b);
      wall_ends(all_walls(view.scene), i - first_wall, a, b);
      return i;
    };
    RayHit best = no_hit();
    float best_s = INFINITY;
    consider_block_lines(first_wall + view.scene.n_walls, line_of, ray_wedge(w.eye, 0, R, R, half_width),
                         ray_wedge(w.eye, w.block_first, w.block_last, R, half_width), w.first_chunk, wedge, ray,
                         lane, &best, &best_s);
    return finish_hit(best, best_s, ray.u, ray.ulen);
  }
  RayHit models = no_hit();
  float models_s = INFINITY;
  bool models_tied = false;  // what `settled` needs; only the grid's passes keep it
  // a lone agent's own model lines are all hidden (Minimal, Explorer): no round for them
  if ((n_agents > 1) || !hidden_own_line(view, 0, radius)) {
    consider_lines(first_wall, model_line_of, wedge, false, Box{}, ray, lane, &models, &models_s,
                   GRID ? &models_tied : nullptr);
  }
  const int cell = GRID ? grid_cell(view.scene.grid, w.eye.p) : -1;
  for (int level = GRID ? first_view_level(view.scene.grid) : 0;; level++) {
    const Pass pass = search_pass(view.scene, cell, level);
    RayHit best = models;
    float best_s = models_s;
    bool tied = models_tied;
    const auto wall_of = [&](int i, Vec* a, Vec* b) {
      const int wall = wall_at(pass.walls, i);
      wall_ends(pass.walls, wall, a, b);
      return first_wall + wall;
    };
    // the last pass (every pass, without the grid) takes every wall: no box to test them against
    consider_lines(pass.walls.count, wall_of, wedge, !last_pass(pass), reach_box(w.eye.p, pass.reach), ray, lane,
                   &best, &best_s, GRID ? &tied : nullptr);
    // the pass is the same for the whole warp, so either every lane takes the vote or none does
    if (last_pass(pass) || __all_sync(ALL, (w.r >= w.last) | settled(pass, best_s, ray.ulen, tied))) {
      return finish_hit(best, best_s, ray.u, ray.ulen);
    }
  }
}

// The min (or max) of x over the warp.
__device__ __forceinline__ float warp_min(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x = fminf(x, __shfl_xor_sync(ALL, x, offset));
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(ALL, x, offset));
  return x;
}

// live_light of each lane's hit (`needed` where the lane's ray is one of the warp's), with the walls shared out:
// lighting each lane's model hit on its own would run every lane through every (light, wall) pair. For each light,
// the lanes take 32 walls a round and keep those inside the box around the light and every point that needs it;
// only those are tested against each point, by the same `occludes`, light by light in order. A wall outside
// that box crosses no segment from the light to a point. The box is widened by 5 cm and 5% of its size: besides
// rounding, `occludes` can misplace the crossing of a wall nearly in line with the segment (its parallel test is
// absolute) by up to about 1% of their lengths; so the light is live_light's.
// Every lane of the warp must call it.
__device__ __forceinline__ float warp_live_light(const View& view, int n_agents, RayHit hit, bool needed, int lane) {
  const bool needs = needed & on_model(hit, n_agents);
  if (!__any_sync(ALL, needs)) return 0.f;
  const EnvScene& scene = view.scene;
  const Vec C = needs ? model_point(view.angles, view.positions, hit) : Vec{0.f, 0.f};
  const Box points = {{warp_min(needs ? C.x : INFINITY), warp_min(needs ? C.y : INFINITY)},
                      {warp_max(needs ? C.x : -INFINITY), warp_max(needs ? C.y : -INFINITY)}};
  float intensity = AMBIENT;
  for (int i = 0; i < scene.n_lights; i++) {
    const Vec I = load_vec(scene.lights + 3 * i);
    Box box = {{fminf(points.lo.x, I.x), fminf(points.lo.y, I.y)}, {fmaxf(points.hi.x, I.x), fmaxf(points.hi.y, I.y)}};
    const float m = .05f + .05f * fmaxf(box.hi.x - box.lo.x, box.hi.y - box.lo.y);
    box = {{box.lo.x - m, box.lo.y - m}, {box.hi.x + m, box.hi.y + m}};
    bool visible = true;
    for (int base = 0; base < scene.n_walls; base += 32) {
      const int w = base + lane;
      Vec a = {0.f, 0.f}, b = {0.f, 0.f};
      if (w < scene.n_walls) {
        a = load_vec(scene.walls + 4 * w);
        b = load_vec(scene.walls + 4 * w + 2);
      }
      unsigned near = __ballot_sync(ALL, (w < scene.n_walls) && !outside(box, a, b));
      while (near) {
        const int k = __ffs(near) - 1;
        near &= near - 1;
        const Vec ka = {__shfl_sync(ALL, a.x, k), __shfl_sync(ALL, a.y, k)};
        const Vec kb = {__shfl_sync(ALL, b.x, k), __shfl_sync(ALL, b.y, k)};
        if (needs & visible) visible = !occludes(I, C, ka, kb);
      }
    }
    if (needs & visible) intensity += light_from(scene.lights + 3 * i, C);
  }
  return needs ? fminf(intensity, 1.f) : 0.f;
}

// One chunk of 32 rays of one view; lanes past the view's last ray help with the culling and write nothing.
template <Search S>
__device__ __forceinline__ void render_rays(const SceneryArrays& s, const WarpRays& rays, int n_agents, int R,
                                            float half_width, float radius, int lane, RenderOutputs out) {
  // a view not wanted is left empty (with Search::BLOCK, by the whole block)
  const RayHit hit = rays.wanted ? cast<S>(rays, n_agents, R, half_width, radius, lane) : no_hit();
  const View view = shaded<S>(s, rays);
  const float live = warp_live_light(view, n_agents, hit, rays.r < rays.last, lane);
  if (rays.r < R) store_ray(view, n_agents, hit, live, rays.v * R + rays.r, out);
}

// Warps over chunks of 32 rays (see WarpWork), blocks_per_sm(S) blocks an SM.
template <Search S>
__global__ void __launch_bounds__(BLOCK, blocks_per_sm(S))
    render_kernel(SceneryArrays s, const float* angles, const float* positions, const bool* mask, int n_agents,
                  int R, Divisor per_view, Divisor per_env, Divisor per_batch, float half_width, float radius,
                  long warps, RenderOutputs out) {
  const long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= warps) return;  // whole warps leave together
  const WarpWork work = warp_work<S>(w, per_view);
  const WarpRays rays =
      warp_rays<S>(s, angles, positions, mask, n_agents, R, 32, work.v, work.first, per_env, per_batch, lane);
  if constexpr (S != Search::BLOCK) {
    render_rays<S>(s, rays, n_agents, R, half_width, radius, lane, out);
  } else {
    for (int c = work.first; c < work.end; c += WARPS) {
      render_rays<S>(s, at_chunk(rays, c, 32, R, lane), n_agents, R, half_width, radius, lane, out);
    }
  }
}

// One chunk of `columns` image columns of K rays each (K * columns <= 32 rays): after the search, each column's
// pixels are summed by shuffles (see column_sum) and its first lane writes the column. K is a template parameter
// for the common counts, so that a column of one ray needs no shuffles and the lane's column no division; K = 0
// reads it from per_column.
template <int K, Search S>
__device__ __forceinline__ void observe_rays(const SceneryArrays& s, const WarpRays& rays, int n_agents, int R,
                                             Divisor per_column, int columns, float half_width, float radius,
                                             float max_depth, int lane, ObserveOutputs out) {
  const int k = K ? K : (int)per_column.d;
  const RayHit hit = rays.wanted ? cast<S>(rays, n_agents, R, half_width, radius, lane) : no_hit();
  // a view not wanted is left empty (whole warps: no lane takes the shuffles below)
  const bool mine_counts = rays.r < rays.last;
  const View view = shaded<S>(s, rays);
  const float live = warp_live_light(view, n_agents, hit, mine_counts, lane);
  const Pixel mine = mine_counts ? pixel_of(view, n_agents, hit, live, radius, max_depth) : Pixel{};
  if (K == 1) {
    if (mine_counts) store_column(out, rays.v * R + rays.r, mine, hit);
    return;
  }
  const int group = K ? lane / K : (int)per_column(lane), first_lane = group * k;
  Pixel sum = mine;
  if (pairwise_sum(k)) {  // a butterfly: every lane of a column ends with its sum, in column_sum's order
    for (int offset = 1; offset < k; offset *= 2) {
      const Pixel p = {{__shfl_xor_sync(ALL, sum.rgb.r, offset), __shfl_xor_sync(ALL, sum.rgb.g, offset),
                        __shfl_xor_sync(ALL, sum.rgb.b, offset)},
                       __shfl_xor_sync(ALL, sum.depth, offset)};
      sum = add(sum, p);
    }
  } else {  // the column's first lane gathers its rays' pixels in order
    for (int j = 1; j < k; j++) {
      const int from = min(first_lane + j, 31);
      const Pixel p = {{__shfl_sync(ALL, mine.rgb.r, from), __shfl_sync(ALL, mine.rgb.g, from),
                        __shfl_sync(ALL, mine.rgb.b, from)},
                       __shfl_sync(ALL, mine.depth, from)};
      sum = add(sum, p);
    }
  }
  const int middle = min(first_lane + k / 2, 31);
  const RayHit mid = {__shfl_sync(ALL, hit.index, middle), __shfl_sync(ALL, hit.location, middle),
                      0.f, 0.f, {0.f, 0.f}};
  if ((lane == first_lane) & (group < columns) & mine_counts) {
    store_column(out, rays.v * (R / k) + rays.first / k + group, mean(sum, k), mid);
  }
}

// Warps over chunks of image columns (see WarpWork and observe_rays).
template <int K, Search S>
__global__ void __launch_bounds__(BLOCK, blocks_per_sm(S))
    observe_kernel(SceneryArrays s, const float* angles, const float* positions, const bool* mask, int n_agents,
                   int R, Divisor per_column, int columns, Divisor per_view, Divisor per_env, Divisor per_batch,
                   float half_width, float radius, float max_depth, long warps, ObserveOutputs out) {
  const long w = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (w >= warps) return;
  const int chunk = columns * (K ? K : (int)per_column.d);
  const WarpWork work = warp_work<S>(w, per_view);
  const WarpRays rays =
      warp_rays<S>(s, angles, positions, mask, n_agents, R, chunk, work.v, work.first, per_env, per_batch, lane);
  if constexpr (S != Search::BLOCK) {  // one chunk
    observe_rays<K, S>(s, rays, n_agents, R, per_column, columns, half_width, radius, max_depth, lane, out);
  } else {
    for (int c = work.first; c < work.end; c += WARPS) {
      observe_rays<K, S>(s, at_chunk(rays, c, chunk, R, lane), n_agents, R, per_column, columns, half_width, radius,
                         max_depth, lane, out);
    }
  }
}

// The warps a launch over `views` views of `chunks` chunks each takes (see WarpWork).
long launch_warps(Search search, long views, long chunks) {
  return search == Search::BLOCK ? views * WARPS : views * chunks;
}

template <int K, Search S>
void launch_observe_kernel(cudaStream_t stream, const ObserveCall& c, const float* angles, const float* positions,
                           long columns, long chunks, float half_width, float radius, float max_depth) {
  const long warps = launch_warps(S, c.views(), chunks);
  observe_kernel<K, S><<<blocks_for(32 * warps), BLOCK, 0, stream>>>(
      c.scenery, angles, positions, c.mask, (int)c.agents.n_agents, (int)c.R, divisor(c.subsample), (int)columns,
      divisor(chunks), divisor(c.n_viewers), divisor(c.scenery.n_envs), half_width, radius, max_depth, warps, c.out);
}

// How the views of a call search (see Search): through the grid for geometries of a few hundred walls
// (search_grid); a block at a time where each block's warps share a view and cover half of it or less (a view of
// 2 * WARPS chunks or a multiple of WARPS beyond). Measured on an H200 (floor plans, Deathmatch's views of 16
// chunks): 1.28x the warps alone; on an H100, views of 8 chunks, whose blocks' warps take a chunk each, 2 to 5%
// slower a block at a time.
Search view_search(const SceneryArrays& s, long chunks) {
  if (search_grid(s)) return Search::GRID;
  return (chunks % WARPS == 0) & (chunks >= 2 * WARPS) ? Search::BLOCK : Search::WARP;
}

template <int K>
void launch_observe(cudaStream_t stream, const ObserveCall& c, const float* angles, const float* positions,
                    long columns, long chunks, float half_width, float radius, float max_depth) {
  const Search search = view_search(c.scenery, chunks);
  auto* launch = search == Search::GRID    ? launch_observe_kernel<K, Search::GRID>
                 : search == Search::BLOCK ? launch_observe_kernel<K, Search::BLOCK>
                                           : launch_observe_kernel<K, Search::WARP>;
  launch(stream, c, angles, positions, columns, chunks, half_width, radius, max_depth);
}

constexpr int MAX_PROGRESS_LANES = 8;
constexpr int GRID_PROGRESS_LANES = 2;  // per agent, with a grid: faster than 1, 4 or 8 on floor plans and mazes
constexpr int QUEUE = 64;  // queue slots per warp: up to 31 left over and a round's 32

// The least wall progress of each agent of a warp (m: the lane's agent's move; set: the walls it may touch).
// A wall's full collision test is long, and only the few walls near a move need it (sweep_box): were each lane to
// test its near walls as it met them, the warp would run a full test for every wall index at which any of its
// lanes met one. So the lanes first box-test their walls and queue the near ones (wall and agent) in shared
// memory, then run the queue's full tests 32 at a time, one per lane, whatever agent each is for. Each agent's
// min is kept in shared memory as bits: progress is never negative or NaN, so its bits order as it does. Every
// lane of the warp must call it.
template <int LANES>
__device__ float queued_walls_progress(Move m, const WallSet& set, float radius) {
  __shared__ int queued_wall[WARPS][QUEUE];
  __shared__ int queued_group[WARPS][QUEUE];
  __shared__ unsigned least[WARPS][32 / LANES];
  const int warp = threadIdx.x / 32, wl = threadIdx.x % 32, lane = wl % LANES, group = wl / LANES;
  if (lane == 0) least[warp][group] = __float_as_uint(1.f);
  const Box near = sweep_box(m.p, m.v, radius);
  int rounds = (set.count + LANES - 1) / LANES;  // the most of any agent in the warp, so all take the ballots
  for (int offset = 16; offset > 0; offset /= 2) rounds = max(rounds, __shfl_xor_sync(ALL, rounds, offset));
  int count = 0;  // queued entries, the same in every lane
  auto run_queue = [&](int k) {  // the full tests of the first k entries, one per lane
    __syncwarp();
    const bool mine = wl < k;
    const int g = mine ? queued_group[warp][wl] : group, w = mine ? queued_wall[warp][wl] : 0;
    const int from = g * LANES;  // a lane of the agent the entry is for
    const Move gm = {{__shfl_sync(ALL, m.p.x, from), __shfl_sync(ALL, m.p.y, from)},
                     {__shfl_sync(ALL, m.v.x, from), __shfl_sync(ALL, m.v.y, from)}};
    const float* gw = (const float*)__shfl_sync(ALL, (long long)set.walls, from);
    if (mine) {
      const float y = wall_collision(gm.p, gm.v, load_vec(gw + 4 * w), load_vec(gw + 4 * w + 2), radius);
      atomicMin(&least[warp][g], __float_as_uint(y + 0.f));  // + 0: -0 to 0, whose bits order with the rest
    }
    __syncwarp();
  };
#pragma unroll 2  // two rounds' loads in flight together: the loop waits on them, not on its arithmetic
  for (int round = 0; round < rounds; round++) {
    const int i = round * LANES + lane;
    const int w = i < set.count ? wall_at(set, i) : 0;
    bool is_near = false;
    if (i < set.count) {
      Vec a, b;
      wall_ends(set, w, &a, &b);
      is_near = may_stop(near, a, b);
    }
    const unsigned ballot = __ballot_sync(ALL, is_near);
    if (is_near) {
      const int slot = count + __popc(ballot & ((1u << wl) - 1));
      queued_wall[warp][slot] = w;
      queued_group[warp][slot] = group;
    }
    count += __popc(ballot);
    if (count >= 32) {
      run_queue(32);
      count -= 32;
      if (wl < count) {  // the rest to the front
        queued_wall[warp][wl] = queued_wall[warp][32 + wl];
        queued_group[warp][wl] = queued_group[warp][32 + wl];
      }
      __syncwarp();  // before the next round's lanes queue behind them
    }
  }
  run_queue(count);
  return __uint_as_float(least[warp][group]);
}

// LANES threads (a power of two, at most 8) per agent; a warp holds 32 / LANES agents. The lanes share out an
// agent's walls and other agents, then take the min. A template parameter, so that the divisions by it are shifts.
// QUEUED: the walls go through queued_walls_progress; without it (geometries of a few walls, such as Minimal's
// box, where a queue would cost more than it saves), each lane tests its own walls directly. Progress is written
// to its own buffer, so the inputs are all read before `advance_kernel` (next on the stream) overwrites them. With
// one agent an env there is nothing to settle, and the agent's first lane moves it here (`out`), in place of
// advance_kernel: no other thread reads its pose.
template <int LANES, bool QUEUED>
__global__ void __launch_bounds__(BLOCK) progress_kernel(SceneryArrays s, const float* angles, const float* positions,
                                                         const float* velocity, const float* angvelocity,
                                                         int n_agents, long n, float fps, float radius,
                                                         float* progress, AgentArrays out) {
  const int lane = threadIdx.x % LANES;
  const long i = ((long)blockIdx.x * blockDim.x + threadIdx.x) / LANES;
  // no early return for agents past the last: their lanes still take part in the warp's shuffles
  Move m = {{0.f, 0.f}, {0.f, 0.f}};
  WallSet walls = {nullptr, 0, nullptr, 0};
  float x = 1.f;
  if (i < n) {
    const long e = i / n_agents;
    const int a = (int)(i - e * n_agents);
    const EnvScene scene = env_scene(s, e);
    const float *p = positions + 2 * e * n_agents, *v = velocity + 2 * e * n_agents;
    m = move_of(a, p, v, fps);
    // a few walls (not QUEUED) are read faster whole than through the grid's lookups
    walls = QUEUED ? move_walls(scene, m, radius) : all_walls(scene);
    x = agents_progress(m, a, n_agents, p, v, fps, radius, lane, LANES);
  }
  if constexpr (!QUEUED) {
    x = fminf(x, walls_progress(m, walls, radius, lane, LANES));
  } else {
    x = fminf(x, queued_walls_progress<LANES>(m, walls, radius));
  }
  for (int offset = LANES / 2; offset > 0; offset /= 2) x = fminf(x, __shfl_xor_sync(ALL, x, offset));
  if ((i < n) & (lane == 0)) {
    progress[i] = x;
    if (n_agents == 1) store_pose(out, i, advance(load_pose(angles, positions, velocity, angvelocity, i), x, fps));
  }
}

// Threads per agent in `progress_kernel` for geometries of few walls: enough for one wall or other agent each (the
// packed wall count bounds any geometry's), at most MAX_PROGRESS_LANES, so that lanes are not left idle.
int progress_lanes(long n_walls, long n_agents) {
  const long work = n_walls + n_agents - 1;
  int lanes = 1;
  while (lanes < MAX_PROGRESS_LANES && lanes < work) lanes *= 2;
  return lanes;
}

constexpr long QUEUED_WALLS = 32;  // packed walls from which the near ones are queued

template <int LANES, bool QUEUED>
void launch_progress(cudaStream_t stream, const PhysicsCall& c, long n, float fps, float radius) {
  progress_kernel<LANES, QUEUED><<<blocks_for(LANES * n), BLOCK, 0, stream>>>(
      c.scenery, c.angles, c.positions, c.velocity, c.angvelocity, (int)c.agents.n_agents, n, fps, radius,
      c.progress, c.out);
}

// A thread per env: settles its agents' progress, then moves them.
__global__ void advance_kernel(const float* angles, const float* positions, const float* velocity,
                               const float* angvelocity, int n_agents, long n_envs, float fps, float radius,
                               float* progress, AgentArrays out) {
  const long e = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= n_envs) return;
  const long i0 = e * n_agents;
  settle(n_agents, positions + 2 * i0, velocity + 2 * i0, fps, radius, progress + i0);
  for (long i = i0; i < i0 + n_agents; i++) {
    store_pose(out, i, advance(load_pose(angles, positions, velocity, angvelocity, i), progress[i], fps));
  }
}

__global__ void bake_kernel(SceneryArrays s, const float* points, long n, float* light) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) light[i] = bake_item(s, points, i);
}

ffi::Error Render(cudaStream_t stream, F32 angles, F32 positions, Bool mask, I32 env_geometry, F32 walls,
                  I32 wall_offsets, F32 lights, I32 light_offsets, F32 texels, F32 baked, I32 texel_offsets,
                  F32 grid_frames, I32 grid_shapes, I32 cell_offsets, I32 cell_walls, I32Out indices,
                  F32Out locations, F32Out dots, F32Out distances, F32Out screen, float half_width, float radius) {
  RenderCall c;
  JS_RETURN_IF_ERROR(decode_render(angles, positions, mask, env_geometry, walls, wall_offsets, lights,
                                   light_offsets, texels, baked, texel_offsets,
                                   {grid_frames, grid_shapes, cell_offsets, cell_walls}, indices, locations, dots,
                                   distances, screen, &c));
  const long chunks = (c.R + 31) / 32, warps = c.views() * chunks;
  if (warps == 0) return ffi::Error::Success();
  if (warps >= MAX_DIVIDEND) {
    return ffi::Error::InvalidArgument("render: " + std::to_string(c.views()) + " views of " + std::to_string(c.R) +
                                       " rays is more than one call can take; split the batch");
  }
  const Search search = view_search(c.scenery, chunks);
  auto* kernel = search == Search::GRID    ? render_kernel<Search::GRID>
                 : search == Search::BLOCK ? render_kernel<Search::BLOCK>
                                           : render_kernel<Search::WARP>;
  const long launched = launch_warps(search, c.views(), chunks);
  kernel<<<blocks_for(32 * launched), BLOCK, 0, stream>>>(
      c.scenery, angles.typed_data(), positions.typed_data(), c.mask, (int)c.agents.n_agents, (int)c.R,
      divisor(chunks), divisor(c.n_viewers), divisor(c.scenery.n_envs), half_width, radius, launched, c.out);
  return launch_status();
}

ffi::Error Observe(cudaStream_t stream, F32 angles, F32 positions, Bool mask, I32 env_geometry, F32 walls,
                   I32 wall_offsets, F32 lights, I32 light_offsets, F32 texels, F32 baked, I32 texel_offsets,
                   F32 grid_frames, I32 grid_shapes, I32 cell_offsets, I32 cell_walls, F32Out rgb, F32Out depth,
                   I32Out indices, F32Out locations, float half_width, float radius, int32_t res, int32_t subsample,
                   float max_depth) {
  ObserveCall c;
  JS_RETURN_IF_ERROR(decode_observe(angles, positions, mask, env_geometry, walls, wall_offsets, lights,
                                    light_offsets, texels, baked, texel_offsets,
                                    {grid_frames, grid_shapes, cell_offsets, cell_walls}, rgb, depth, indices,
                                    locations, res, subsample, max_depth, &c));
  const long k = c.subsample, columns = 32 / k, chunk = columns * k;  // whole columns per warp
  const long chunks = (c.R + chunk - 1) / chunk, warps = c.views() * chunks;
  if (warps == 0) return ffi::Error::Success();
  if (warps >= MAX_DIVIDEND) {
    return ffi::Error::InvalidArgument("observe: " + std::to_string(c.views()) + " views of " +
                                       std::to_string(c.R) + " rays is more than one call can take; split the batch");
  }
  const float *a = angles.typed_data(), *p = positions.typed_data();
  switch (k) {
    case 1: launch_observe<1>(stream, c, a, p, columns, chunks, half_width, radius, max_depth); break;
    case 2: launch_observe<2>(stream, c, a, p, columns, chunks, half_width, radius, max_depth); break;
    case 4: launch_observe<4>(stream, c, a, p, columns, chunks, half_width, radius, max_depth); break;
    case 8: launch_observe<8>(stream, c, a, p, columns, chunks, half_width, radius, max_depth); break;
    default: launch_observe<0>(stream, c, a, p, columns, chunks, half_width, radius, max_depth);
  }
  return launch_status();
}

ffi::Error Physics(cudaStream_t stream, F32 angles, F32 positions, F32 velocity, F32 angvelocity, I32 env_geometry,
                   F32 walls, I32 wall_offsets, F32 grid_frames, I32 grid_shapes, I32 cell_offsets, I32 cell_walls,
                   F32Out angles_out, F32Out positions_out, F32Out velocity_out, F32Out angvelocity_out,
                   F32Out progress, float fps, float radius) {
  PhysicsCall c;
  JS_RETURN_IF_ERROR(decode_physics(angles, positions, velocity, angvelocity, env_geometry, walls, wall_offsets,
                                    {grid_frames, grid_shapes, cell_offsets, cell_walls}, angles_out, positions_out,
                                    velocity_out, angvelocity_out, progress, &c));
  const long n = c.agents.batch * c.agents.n_envs * c.agents.n_agents;
  if (n == 0) return ffi::Error::Success();
  if (c.scenery.n_walls >= QUEUED_WALLS) {
    // a grid's lists hold a few tens of walls, too few to share out over 8 lanes
    if (c.scenery.n_reaches > 0) {
      launch_progress<GRID_PROGRESS_LANES, true>(stream, c, n, fps, radius);
    } else {
      launch_progress<MAX_PROGRESS_LANES, true>(stream, c, n, fps, radius);
    }
  } else {
    switch (progress_lanes(c.scenery.n_walls, c.agents.n_agents)) {
      case 1: launch_progress<1, false>(stream, c, n, fps, radius); break;
      case 2: launch_progress<2, false>(stream, c, n, fps, radius); break;
      case 4: launch_progress<4, false>(stream, c, n, fps, radius); break;
      default: launch_progress<MAX_PROGRESS_LANES, false>(stream, c, n, fps, radius);
    }
  }
  const long envs = c.agents.batch * c.agents.n_envs;
  if (c.agents.n_agents > 1) {  // one agent an env was moved by progress_kernel
    advance_kernel<<<blocks_for(envs), BLOCK, 0, stream>>>(c.angles, c.positions, c.velocity, c.angvelocity,
                                                           (int)c.agents.n_agents, envs, fps, radius, c.progress,
                                                           c.out);
  }
  return launch_status();
}

ffi::Error Bake(cudaStream_t stream, F32 points, I32 point_geometry, F32 walls, I32 wall_offsets, F32 lights,
                I32 light_offsets, F32Out light) {
  BakeCall c;
  JS_RETURN_IF_ERROR(decode_bake(points, point_geometry, walls, wall_offsets, lights, light_offsets, light, &c));
  if (c.n_points == 0) return ffi::Error::Success();
  bake_kernel<<<blocks_for(c.n_points), BLOCK, 0, stream>>>(c.scenery, c.points, c.n_points, c.light);
  return launch_status();
}

}  // namespace
}  // namespace jaxstep

using jaxstep::F32;
using jaxstep::I32;
namespace xffi = xla::ffi;

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepRenderCuda, jaxstep::Render,
                              xffi::Ffi::Bind()
                                  .Ctx<xffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32>()  // angles
                                  .Arg<F32>()  // positions
                                  .Arg<jaxstep::Bool>()  // mask
                                  .Arg<I32>()  // env_geometry
                                  .Arg<F32>()  // walls
                                  .Arg<I32>()  // wall_offsets
                                  .Arg<F32>()  // lights
                                  .Arg<I32>()  // light_offsets
                                  .Arg<F32>()  // texels
                                  .Arg<F32>()  // baked
                                  .Arg<I32>()  // texel_offsets
                                  .Arg<F32>()  // grid_frames
                                  .Arg<I32>()  // grid_shapes
                                  .Arg<I32>()  // cell_offsets
                                  .Arg<I32>()  // cell_walls
                                  .Ret<I32>()  // indices
                                  .Ret<F32>()  // locations
                                  .Ret<F32>()  // dots
                                  .Ret<F32>()  // distances
                                  .Ret<F32>()  // screen
                                  .Attr<float>("half_width")
                                  .Attr<float>("radius"),
                              {xffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepObserveCuda, jaxstep::Observe,
                              xffi::Ffi::Bind()
                                  .Ctx<xffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32>()  // angles
                                  .Arg<F32>()  // positions
                                  .Arg<jaxstep::Bool>()  // mask
                                  .Arg<I32>()  // env_geometry
                                  .Arg<F32>()  // walls
                                  .Arg<I32>()  // wall_offsets
                                  .Arg<F32>()  // lights
                                  .Arg<I32>()  // light_offsets
                                  .Arg<F32>()  // texels
                                  .Arg<F32>()  // baked
                                  .Arg<I32>()  // texel_offsets
                                  .Arg<F32>()  // grid_frames
                                  .Arg<I32>()  // grid_shapes
                                  .Arg<I32>()  // cell_offsets
                                  .Arg<I32>()  // cell_walls
                                  .Ret<F32>()  // rgb
                                  .Ret<F32>()  // depth
                                  .Ret<I32>()  // indices
                                  .Ret<F32>()  // locations
                                  .Attr<float>("half_width")
                                  .Attr<float>("radius")
                                  .Attr<int32_t>("res")
                                  .Attr<int32_t>("subsample")
                                  .Attr<float>("max_depth"),
                              {xffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepPhysicsCuda, jaxstep::Physics,
                              xffi::Ffi::Bind()
                                  .Ctx<xffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32>()  // angles
                                  .Arg<F32>()  // positions
                                  .Arg<F32>()  // velocity
                                  .Arg<F32>()  // angvelocity
                                  .Arg<I32>()  // env_geometry
                                  .Arg<F32>()  // walls
                                  .Arg<I32>()  // wall_offsets
                                  .Arg<F32>()  // grid_frames
                                  .Arg<I32>()  // grid_shapes
                                  .Arg<I32>()  // cell_offsets
                                  .Arg<I32>()  // cell_walls
                                  .Ret<F32>()  // angles
                                  .Ret<F32>()  // positions
                                  .Ret<F32>()  // velocity
                                  .Ret<F32>()  // angvelocity
                                  .Ret<F32>()  // progress
                                  .Attr<float>("fps")
                                  .Attr<float>("radius"),
                              {xffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepBakeCuda, jaxstep::Bake,
                              xffi::Ffi::Bind()
                                  .Ctx<xffi::PlatformStream<cudaStream_t>>()
                                  .Arg<F32>()  // points
                                  .Arg<I32>()  // point_geometry
                                  .Arg<F32>()  // walls
                                  .Arg<I32>()  // wall_offsets
                                  .Arg<F32>()  // lights
                                  .Arg<I32>()  // light_offsets
                                  .Ret<F32>(),  // light
                              {xffi::Traits::kCmdBufferCompatible});
