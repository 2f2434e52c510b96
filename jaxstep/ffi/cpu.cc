// CPU handlers: loops over items, calling the shared kernel math in kernels.h.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <vector>

#include "jaxstep/ffi/buffers.h"

namespace jaxstep {
namespace {

// Rays go in chunks of 32 (a CUDA warp's share), searched in passes (see Pass; one pass over all walls without the
// grid) until every ray of the chunk has its final hit: each pass gathers the lines that may meet the chunk's wedge
// (walls within its reach), then each ray considers just those, in order.
constexpr int CHUNK = 32;

float live(const View& view, int A, RayHit hit) { return live_light(view.scene, view.angles, view.positions, A, hit); }

// Casts every ray of one (wanted) view, calling visit(r, hit) for r = 0 .. R-1 in order. `index` and `ends`
// are scratch space, kept by the caller across views.
template <typename Visit>
void cast_view(const View& view, bool grid, int A, int R, float half_width, float radius, std::vector<int>& index,
               std::vector<Vec>& ends, Visit visit) {
  const Viewpoint eye = viewpoint(view.angles, view.positions, view.agent);
  const int cell = grid ? grid_cell(view.scene.grid, eye.p) : -1;
  RayHit hits[CHUNK];
  for (int first = 0; first < R; first += CHUNK) {
    const int last = std::min(first + CHUNK, R);
    const Wedge wedge = ray_wedge(eye, first, last, R, half_width);
    for (int level = grid ? first_view_level(view.scene.grid) : 0;; level++) {
      const Pass pass = search_pass(view.scene, cell, level);
      const Box near = reach_box(eye.p, pass.reach);
      index.clear();
      ends.clear();
      for (int i = 0; i < pass_lines(pass, A); i++) {
        if (hidden_own_line(view, i, radius)) continue;
        const int line = pass_line(pass, A, i);
        Vec a, b;
        scene_line(view.scene, view.angles, view.positions, A, line, &a, &b);
        if (!may_hit(wedge, a, b) || (line >= A * MODEL_LINES && outside(near, a, b))) continue;
        index.push_back(line);
        ends.push_back(a);
        ends.push_back(b);
      }
      bool settled_all = true;
      for (int r = first; r < last; r++) {
        const Ray ray = make_ray(eye, r, R, half_width, radius);
        RayHit best = no_hit();
        float best_s = INFINITY;
        bool tied = false;
        for (size_t k = 0; k < index.size(); k++) {
          consider_line(ray.p, ray.u, ray.near, index[k], ends[2 * k], ends[2 * k + 1], &best, &best_s, &tied);
        }
        settled_all &= settled(pass, best_s, ray.ulen, tied);
        hits[r - first] = finish_hit(best, best_s, ray.u, ray.ulen);
      }
      if (last_pass(pass) || settled_all) break;
    }
    for (int r = first; r < last; r++) visit(r, hits[r - first]);
  }
}

ffi::Error Render(F32 angles, F32 positions, Bool mask, I32 env_geometry, F32 walls, I32 wall_offsets,
                  F32 lights, I32 light_offsets, F32 texels, F32 baked, I32 texel_offsets, F32 grid_frames,
                  I32 grid_shapes, I32 cell_offsets, I32 cell_walls, I32Out indices, F32Out locations, F32Out dots,
                  F32Out distances, F32Out screen, float half_width, float radius) {
  RenderCall c;
  JS_RETURN_IF_ERROR(decode_render(angles, positions, mask, env_geometry, walls, wall_offsets, lights,
                                   light_offsets, texels, baked, texel_offsets,
                                   {grid_frames, grid_shapes, cell_offsets, cell_walls}, indices, locations, dots,
                                   distances, screen, &c));
  const int A = (int)c.agents.n_agents, V = (int)c.n_viewers, R = (int)c.R;
  std::vector<int> index;
  std::vector<Vec> ends;
  for (long v = 0; v < c.views(); v++) {
    const View view = view_of(c.scenery, angles.typed_data(), positions.typed_data(), A, V, v);
    if (!c.mask[v]) {
      for (int r = 0; r < R; r++) store_ray(view, A, no_hit(), 0.f, v * R + r, c.out);
      continue;
    }
    cast_view(view, search_grid(c.scenery), A, R, half_width, radius, index, ends,
              [&](int r, RayHit hit) { store_ray(view, A, hit, live(view, A, hit), v * R + r, c.out); });
  }
  return ffi::Error::Success();
}

ffi::Error Observe(F32 angles, F32 positions, Bool mask, I32 env_geometry, F32 walls, I32 wall_offsets,
                   F32 lights, I32 light_offsets, F32 texels, F32 baked, I32 texel_offsets, F32 grid_frames,
                   I32 grid_shapes, I32 cell_offsets, I32 cell_walls, F32Out rgb, F32Out depth, I32Out indices,
                   F32Out locations, float half_width, float radius, int32_t res, int32_t subsample, float max_depth) {
  ObserveCall c;
  JS_RETURN_IF_ERROR(decode_observe(angles, positions, mask, env_geometry, walls, wall_offsets, lights,
                                    light_offsets, texels, baked, texel_offsets,
                                    {grid_frames, grid_shapes, cell_offsets, cell_walls}, rgb, depth, indices,
                                    locations, res, subsample, max_depth, &c));
  const int A = (int)c.agents.n_agents, V = (int)c.n_viewers, R = (int)c.R, k = (int)c.subsample;
  const long W = c.columns();
  std::vector<int> index;
  std::vector<Vec> ends;
  std::vector<Pixel> pixels(R);
  std::vector<RayHit> hits(R);
  for (long v = 0; v < c.views(); v++) {
    if (!c.mask[v]) {
      for (long col = 0; col < W; col++) store_column(c.out, v * W + col, Pixel{{0.f, 0.f, 0.f}, 0.f}, no_hit());
      continue;
    }
    const View view = view_of(c.scenery, angles.typed_data(), positions.typed_data(), A, V, v);
    cast_view(view, search_grid(c.scenery), A, R, half_width, radius, index, ends, [&](int r, RayHit hit) {
      hits[r] = hit;
      pixels[r] = pixel_of(view, A, hit, live(view, A, hit), radius, max_depth);
    });
    for (long col = 0; col < W; col++) {
      store_column(c.out, v * W + col, mean(column_sum(&pixels[col * k], k), k), hits[col * k + k / 2]);
    }
  }
  return ffi::Error::Success();
}

ffi::Error Physics(F32 angles, F32 positions, F32 velocity, F32 angvelocity, I32 env_geometry,
                   F32 walls, I32 wall_offsets, F32 grid_frames, I32 grid_shapes, I32 cell_offsets, I32 cell_walls,
                   F32Out angles_out, F32Out positions_out, F32Out velocity_out, F32Out angvelocity_out,
                   F32Out progress, float fps, float radius) {
  PhysicsCall c;
  JS_RETURN_IF_ERROR(decode_physics(angles, positions, velocity, angvelocity, env_geometry, walls, wall_offsets,
                                    {grid_frames, grid_shapes, cell_offsets, cell_walls}, angles_out, positions_out,
                                    velocity_out, angvelocity_out, progress, &c));
  const int A = (int)c.agents.n_agents;
  const long n = c.agents.batch * c.agents.n_envs * A;
  // Every progress first: the outputs may alias the inputs, and each agent's progress reads all of its env.
  for (long i = 0; i < n; i++) {
    c.progress[i] = progress_item(c.scenery, c.positions, c.velocity, A, fps, radius, i);
  }
  for (long e = 0; e < n / std::max(A, 1); e++) {
    settle(A, c.positions + 2 * e * A, c.velocity + 2 * e * A, fps, radius, c.progress + e * A);
  }
  for (long i = 0; i < n; i++) {
    const Pose pose = load_pose(c.angles, c.positions, c.velocity, c.angvelocity, i);
    store_pose(c.out, i, advance(pose, c.progress[i], fps));
  }
  return ffi::Error::Success();
}

ffi::Error Bake(F32 points, I32 point_geometry, F32 walls, I32 wall_offsets, F32 lights, I32 light_offsets,
                F32Out light) {
  BakeCall c;
  JS_RETURN_IF_ERROR(decode_bake(points, point_geometry, walls, wall_offsets, lights, light_offsets, light, &c));
  for (long i = 0; i < c.n_points; i++) c.light[i] = bake_item(c.scenery, c.points, i);
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jaxstep

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepRenderCpu, jaxstep::Render,
                              jaxstep::ffi::Ffi::Bind()
                                  .Arg<jaxstep::F32>()  // angles
                                  .Arg<jaxstep::F32>()  // positions
                                  .Arg<jaxstep::Bool>()  // mask
                                  .Arg<jaxstep::I32>()  // env_geometry
                                  .Arg<jaxstep::F32>()  // walls
                                  .Arg<jaxstep::I32>()  // wall_offsets
                                  .Arg<jaxstep::F32>()  // lights
                                  .Arg<jaxstep::I32>()  // light_offsets
                                  .Arg<jaxstep::F32>()  // texels
                                  .Arg<jaxstep::F32>()  // baked
                                  .Arg<jaxstep::I32>()  // texel_offsets
                                  .Arg<jaxstep::F32>()  // grid_frames
                                  .Arg<jaxstep::I32>()  // grid_shapes
                                  .Arg<jaxstep::I32>()  // cell_offsets
                                  .Arg<jaxstep::I32>()  // cell_walls
                                  .Ret<jaxstep::I32>()  // indices
                                  .Ret<jaxstep::F32>()  // locations
                                  .Ret<jaxstep::F32>()  // dots
                                  .Ret<jaxstep::F32>()  // distances
                                  .Ret<jaxstep::F32>()  // screen
                                  .Attr<float>("half_width")
                                  .Attr<float>("radius"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepObserveCpu, jaxstep::Observe,
                              jaxstep::ffi::Ffi::Bind()
                                  .Arg<jaxstep::F32>()  // angles
                                  .Arg<jaxstep::F32>()  // positions
                                  .Arg<jaxstep::Bool>()  // mask
                                  .Arg<jaxstep::I32>()  // env_geometry
                                  .Arg<jaxstep::F32>()  // walls
                                  .Arg<jaxstep::I32>()  // wall_offsets
                                  .Arg<jaxstep::F32>()  // lights
                                  .Arg<jaxstep::I32>()  // light_offsets
                                  .Arg<jaxstep::F32>()  // texels
                                  .Arg<jaxstep::F32>()  // baked
                                  .Arg<jaxstep::I32>()  // texel_offsets
                                  .Arg<jaxstep::F32>()  // grid_frames
                                  .Arg<jaxstep::I32>()  // grid_shapes
                                  .Arg<jaxstep::I32>()  // cell_offsets
                                  .Arg<jaxstep::I32>()  // cell_walls
                                  .Ret<jaxstep::F32>()  // rgb
                                  .Ret<jaxstep::F32>()  // depth
                                  .Ret<jaxstep::I32>()  // indices
                                  .Ret<jaxstep::F32>()  // locations
                                  .Attr<float>("half_width")
                                  .Attr<float>("radius")
                                  .Attr<int32_t>("res")
                                  .Attr<int32_t>("subsample")
                                  .Attr<float>("max_depth"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepPhysicsCpu, jaxstep::Physics,
                              jaxstep::ffi::Ffi::Bind()
                                  .Arg<jaxstep::F32>()  // angles
                                  .Arg<jaxstep::F32>()  // positions
                                  .Arg<jaxstep::F32>()  // velocity
                                  .Arg<jaxstep::F32>()  // angvelocity
                                  .Arg<jaxstep::I32>()  // env_geometry
                                  .Arg<jaxstep::F32>()  // walls
                                  .Arg<jaxstep::I32>()  // wall_offsets
                                  .Arg<jaxstep::F32>()  // grid_frames
                                  .Arg<jaxstep::I32>()  // grid_shapes
                                  .Arg<jaxstep::I32>()  // cell_offsets
                                  .Arg<jaxstep::I32>()  // cell_walls
                                  .Ret<jaxstep::F32>()  // angles
                                  .Ret<jaxstep::F32>()  // positions
                                  .Ret<jaxstep::F32>()  // velocity
                                  .Ret<jaxstep::F32>()  // angvelocity
                                  .Ret<jaxstep::F32>()  // progress
                                  .Attr<float>("fps")
                                  .Attr<float>("radius"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepBakeCpu, jaxstep::Bake,
                              jaxstep::ffi::Ffi::Bind()
                                  .Arg<jaxstep::F32>()  // points
                                  .Arg<jaxstep::I32>()  // point_geometry
                                  .Arg<jaxstep::F32>()  // walls
                                  .Arg<jaxstep::I32>()  // wall_offsets
                                  .Arg<jaxstep::F32>()  // lights
                                  .Arg<jaxstep::I32>()  // light_offsets
                                  .Ret<jaxstep::F32>());  // light

namespace {
template <typename T>
pybind11::capsule capsule(T* fn) {
  return pybind11::capsule(reinterpret_cast<void*>(fn));
}
}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "jaxstep's CPU FFI handlers";
  m.def("registrations", []() {
    pybind11::dict d;
    d["jaxstep_render"] = capsule(JaxstepRenderCpu);
    d["jaxstep_observe"] = capsule(JaxstepObserveCpu);
    d["jaxstep_physics"] = capsule(JaxstepPhysicsCpu);
    d["jaxstep_bake"] = capsule(JaxstepBakeCpu);
    return d;
  });
}
