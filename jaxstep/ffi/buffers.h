// Host-side decoding and checking of the FFI buffers, shared by the CPU and CUDA handlers.
//
// Every buffer is (*batch, *item): any number of leading batch dimensions (vmap adds them) followed by the
// item dimensions the kernel expects. All buffers of one call must share the same batch size.
#pragma once

#include <cstdint>
#include <string>

#include "jaxstep/ffi/kernels.h"
#include "xla/ffi/api/ffi.h"

namespace jaxstep {

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using I32 = ffi::Buffer<ffi::S32>;
using Bool = ffi::Buffer<ffi::PRED>;
using F32Out = ffi::ResultBuffer<ffi::F32>;
using I32Out = ffi::ResultBuffer<ffi::S32>;

// Shape of one buffer split into its batch size and its trailing item dimensions.
struct Split {
  int64_t batch = 1;
  int64_t dims[4] = {0, 0, 0, 0};
};

inline std::string shape_string(ffi::Span<const int64_t> dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); i++) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

// Splits `dims` into batch and `item_rank` item dims; `fixed[i] >= 0` pins item dim i to that size.
inline ffi::Error split(const char* name, ffi::Span<const int64_t> dims, int item_rank, const int64_t* fixed,
                        Split* out) {
  const int rank = (int)dims.size();
  if (rank < item_rank) {
    return ffi::Error::InvalidArgument(std::string(name) + ": expected at least " + std::to_string(item_rank) +
                                       " dimensions, got shape " + shape_string(dims));
  }
  out->batch = 1;
  for (int i = 0; i < rank - item_rank; i++) out->batch *= dims[i];
  for (int i = 0; i < item_rank; i++) {
    out->dims[i] = dims[rank - item_rank + i];
    if (fixed && fixed[i] >= 0 && out->dims[i] != fixed[i]) {
      return ffi::Error::InvalidArgument(std::string(name) + ": trailing dimension " + std::to_string(i) +
                                         " must be " + std::to_string(fixed[i]) + ", got shape " +
                                         shape_string(dims));
    }
  }
  return ffi::Error::Success();
}

inline ffi::Error same_batch(const char* name, const Split& s, int64_t batch) {
  if (s.batch == batch) return ffi::Error::Success();
  return ffi::Error::InvalidArgument(std::string(name) + ": batch size " + std::to_string(s.batch) +
                                     " differs from the agents' batch size " + std::to_string(batch));
}

#define JS_RETURN_IF_ERROR(expr)          \
  do {                                    \
    ffi::Error _err = (expr);             \
    if (_err.failure()) return _err;      \
  } while (0)

// Agents' leading shape: angles (*batch, n_envs, n_agents).
struct AgentShape {
  int64_t batch, n_envs, n_agents;
};

inline ffi::Error decode_agents(const F32& angles, const F32& positions, AgentShape* out) {
  Split a, p;
  JS_RETURN_IF_ERROR(split("angles", angles.dimensions(), 2, nullptr, &a));
  const int64_t pfixed[3] = {a.dims[0], a.dims[1], 2};
  JS_RETURN_IF_ERROR(split("positions", positions.dimensions(), 3, pfixed, &p));
  JS_RETURN_IF_ERROR(same_batch("positions", p, a.batch));
  *out = {a.batch, a.dims[0], a.dims[1]};
  return ffi::Error::Success();
}

inline ffi::Error decode_vector(const char* name, const F32& buffer, const AgentShape& shape, int components) {
  Split s;
  const int64_t fixed[3] = {shape.n_envs, shape.n_agents, components};
  JS_RETURN_IF_ERROR(split(name, buffer.dimensions(), components > 1 ? 3 : 2, fixed, &s));
  return same_batch(name, s, shape.batch);
}

// Checks the scenery buffers against each other and the env count, and points `out` at them.
// The lights (null for physics) and the texels, baked and texel_offsets (null for physics and bake) are
// optional.
inline ffi::Error decode_scenery(const I32& env_geometry, const F32& walls, const I32& wall_offsets,
                                 const F32* lights, const I32* light_offsets, const F32* texels, const F32* baked,
                                 const I32* texel_offsets, int64_t batch, int64_t n_envs, SceneryArrays* out) {
  Split eg, w, wo;
  const int64_t eg_fixed[1] = {n_envs};
  JS_RETURN_IF_ERROR(split("env_geometry", env_geometry.dimensions(), 1, eg_fixed, &eg));
  JS_RETURN_IF_ERROR(same_batch("env_geometry", eg, batch));
  const int64_t w_fixed[3] = {-1, 2, 2};
  JS_RETURN_IF_ERROR(split("walls", walls.dimensions(), 3, w_fixed, &w));
  JS_RETURN_IF_ERROR(same_batch("walls", w, batch));
  JS_RETURN_IF_ERROR(split("wall_offsets", wall_offsets.dimensions(), 1, nullptr, &wo));
  JS_RETURN_IF_ERROR(same_batch("wall_offsets", wo, batch));
  if (wo.dims[0] < 1) return ffi::Error::InvalidArgument("wall_offsets: needs at least one entry");
  *out = SceneryArrays{env_geometry.typed_data(), walls.typed_data(), wall_offsets.typed_data(), nullptr, nullptr,
                       nullptr, nullptr, nullptr, (long)n_envs, (long)(wo.dims[0] - 1), (long)w.dims[0], 0, 0,
                       nullptr, nullptr, nullptr, nullptr, 0, 0, 0};
  if (lights) {
    Split l, lo;
    const int64_t l_fixed[2] = {-1, 3};
    JS_RETURN_IF_ERROR(split("lights", lights->dimensions(), 2, l_fixed, &l));
    JS_RETURN_IF_ERROR(same_batch("lights", l, batch));
    const int64_t lo_fixed[1] = {wo.dims[0]};
    JS_RETURN_IF_ERROR(split("light_offsets", light_offsets->dimensions(), 1, lo_fixed, &lo));
    JS_RETURN_IF_ERROR(same_batch("light_offsets", lo, batch));
    out->lights = lights->typed_data();
    out->light_offsets = light_offsets->typed_data();
    out->n_lights = (long)l.dims[0];
  }
  if (texels) {
    Split t, bk, to;
    const int64_t t_fixed[2] = {-1, 3};
    JS_RETURN_IF_ERROR(split("texels", texels->dimensions(), 2, t_fixed, &t));
    JS_RETURN_IF_ERROR(same_batch("texels", t, batch));
    const int64_t bk_fixed[1] = {t.dims[0]};
    JS_RETURN_IF_ERROR(split("baked", baked->dimensions(), 1, bk_fixed, &bk));
    JS_RETURN_IF_ERROR(same_batch("baked", bk, batch));
    const int64_t to_fixed[1] = {MODEL_LINES + w.dims[0] + 1};
    JS_RETURN_IF_ERROR(split("texel_offsets", texel_offsets->dimensions(), 1, to_fixed, &to));
    JS_RETURN_IF_ERROR(same_batch("texel_offsets", to, batch));
    out->texels = texels->typed_data();
    out->baked = baked->typed_data();
    out->texel_offsets = texel_offsets->typed_data();
    out->n_texels = (long)t.dims[0];
  }
  return ffi::Error::Success();
}

// A scenery's grids (see Grid in kernels.h), which render, observe and physics read.
struct GridBuffers {
  const F32& frames;        // (*batch, G, 3 + n_reaches)
  const I32& shapes;        // (*batch, G, 3)
  const I32& cell_offsets;  // (*batch, n_cells * n_reaches + 1)
  const I32& cell_walls;    // (*batch, N)
};

// Checks the grid buffers against the scenery (`out`, from decode_scenery) and points `out` at them. With no
// reaches there is no grid, and every search reads all walls.
inline ffi::Error decode_grid(const GridBuffers& grid, int64_t batch, SceneryArrays* out) {
  Split f, sh, co, cw;
  const int64_t f_fixed[2] = {out->n_geometries, -1}, sh_fixed[2] = {out->n_geometries, 3};
  JS_RETURN_IF_ERROR(split("grid_frames", grid.frames.dimensions(), 2, f_fixed, &f));
  JS_RETURN_IF_ERROR(same_batch("grid_frames", f, batch));
  if (f.dims[1] < 3) {
    return ffi::Error::InvalidArgument("grid_frames: expected 3 + n_reaches columns, got shape " +
                                       shape_string(grid.frames.dimensions()));
  }
  JS_RETURN_IF_ERROR(split("grid_shapes", grid.shapes.dimensions(), 2, sh_fixed, &sh));
  JS_RETURN_IF_ERROR(same_batch("grid_shapes", sh, batch));
  JS_RETURN_IF_ERROR(split("cell_offsets", grid.cell_offsets.dimensions(), 1, nullptr, &co));
  JS_RETURN_IF_ERROR(same_batch("cell_offsets", co, batch));
  if (co.dims[0] < 1) return ffi::Error::InvalidArgument("cell_offsets: needs at least one entry");
  JS_RETURN_IF_ERROR(split("cell_walls", grid.cell_walls.dimensions(), 1, nullptr, &cw));
  JS_RETURN_IF_ERROR(same_batch("cell_walls", cw, batch));
  if (co.dims[0] > INT32_MAX || cw.dims[0] > INT32_MAX) {  // the kernels index the lists in int
    return ffi::Error::InvalidArgument("cell_offsets, cell_walls: at most 2^31 - 1 entries each, got shapes " +
                                       shape_string(grid.cell_offsets.dimensions()) + " and " +
                                       shape_string(grid.cell_walls.dimensions()));
  }
  out->n_reaches = (long)(f.dims[1] - 3);
  if (out->n_reaches == 0) return ffi::Error::Success();
  out->grid_frames = grid.frames.typed_data();
  out->grid_shapes = grid.shapes.typed_data();
  out->cell_offsets = grid.cell_offsets.typed_data();
  out->cell_walls = grid.cell_walls.typed_data();
  out->n_cell_offsets = (long)co.dims[0];
  out->n_cell_walls = (long)cw.dims[0];
  return ffi::Error::Success();
}

inline ffi::Error check_output(const char* name, ffi::Span<const int64_t> dims, int64_t expected) {
  int64_t n = 1;
  for (auto d : dims) n *= d;
  if (n == expected) return ffi::Error::Success();
  return ffi::Error::InvalidArgument(std::string(name) + ": output has " + std::to_string(n) + " elements, expected " +
                                     std::to_string(expected));
}

// Render: decodes inputs and outputs; `R` and `n_viewers` (the agents whose views are rendered, the first ones)
// are read from the indices output's last two dimensions.
struct RenderCall {
  SceneryArrays scenery;
  AgentShape agents;
  int64_t n_viewers, R;
  const bool* mask;  // (*batch, n_envs, n_viewers): views not wanted are left empty
  RenderOutputs out;
  int64_t views() const { return agents.batch * agents.n_envs * n_viewers; }
};

inline ffi::Error decode_render(const F32& angles, const F32& positions, const Bool& mask, const I32& env_geometry,
                                const F32& walls,
                                const I32& wall_offsets, const F32& lights, const I32& light_offsets,
                                const F32& texels, const F32& baked, const I32& texel_offsets,
                                const GridBuffers& grid, I32Out& indices, F32Out& locations, F32Out& dots,
                                F32Out& distances, F32Out& screen, RenderCall* call) {
  JS_RETURN_IF_ERROR(decode_agents(angles, positions, &call->agents));
  const AgentShape& a = call->agents;
  JS_RETURN_IF_ERROR(decode_scenery(env_geometry, walls, wall_offsets, &lights, &light_offsets, &texels, &baked,
                                    &texel_offsets, a.batch, a.n_envs, &call->scenery));
  JS_RETURN_IF_ERROR(decode_grid(grid, a.batch, &call->scenery));
  const auto dims = indices->dimensions();
  if (dims.size() < 2) return ffi::Error::InvalidArgument("indices: output needs viewer and resolution dimensions");
  call->R = dims[dims.size() - 1];
  call->n_viewers = dims[dims.size() - 2];
  if (call->n_viewers > a.n_agents) {
    return ffi::Error::InvalidArgument("indices: " + std::to_string(call->n_viewers) + " viewers, expected at most " +
                                       std::to_string(a.n_agents) + " (the agents per env)");
  }
  Split m;
  const int64_t m_fixed[2] = {a.n_envs, call->n_viewers};
  JS_RETURN_IF_ERROR(split("mask", mask.dimensions(), 2, m_fixed, &m));
  JS_RETURN_IF_ERROR(same_batch("mask", m, a.batch));
  call->mask = reinterpret_cast<const bool*>(mask.untyped_data());
  const int64_t rays = call->views() * call->R;
  JS_RETURN_IF_ERROR(check_output("indices", indices->dimensions(), rays));
  JS_RETURN_IF_ERROR(check_output("locations", locations->dimensions(), rays));
  JS_RETURN_IF_ERROR(check_output("dots", dots->dimensions(), rays));
  JS_RETURN_IF_ERROR(check_output("distances", distances->dimensions(), rays));
  JS_RETURN_IF_ERROR(check_output("screen", screen->dimensions(), 3 * rays));
  call->out = {indices->typed_data(), locations->typed_data(), dots->typed_data(), distances->typed_data(),
               screen->typed_data()};
  return ffi::Error::Success();
}

// Observe: like render, but the outputs are W = R / subsample image columns of each view; an output with no
// elements is not wanted (its pointer is left null). The views are the mask's: (*batch, n_envs, n_viewers).
struct ObserveCall {
  SceneryArrays scenery;
  AgentShape agents;
  int64_t n_viewers, R, subsample;
  const bool* mask;
  ObserveOutputs out;
  int64_t views() const { return agents.batch * agents.n_envs * n_viewers; }
  int64_t columns() const { return R / subsample; }
};

template <ffi::DataType T>
inline ffi::Error wanted_output(const char* name, ffi::ResultBuffer<T>& buffer, int64_t expected,
                                ffi::NativeType<T>** out) {
  int64_t n = 1;
  for (auto d : buffer->dimensions()) n *= d;
  *out = n ? buffer->typed_data() : nullptr;
  return n ? check_output(name, buffer->dimensions(), expected) : ffi::Error::Success();
}

inline ffi::Error decode_observe(const F32& angles, const F32& positions, const Bool& mask, const I32& env_geometry,
                                 const F32& walls, const I32& wall_offsets, const F32& lights,
                                 const I32& light_offsets, const F32& texels, const F32& baked,
                                 const I32& texel_offsets, const GridBuffers& grid, F32Out& rgb, F32Out& depth,
                                 I32Out& indices, F32Out& locations, int64_t res, int64_t subsample,
                                 float max_depth, ObserveCall* call) {
  JS_RETURN_IF_ERROR(decode_agents(angles, positions, &call->agents));
  const AgentShape& a = call->agents;
  JS_RETURN_IF_ERROR(decode_scenery(env_geometry, walls, wall_offsets, &lights, &light_offsets, &texels, &baked,
                                    &texel_offsets, a.batch, a.n_envs, &call->scenery));
  JS_RETURN_IF_ERROR(decode_grid(grid, a.batch, &call->scenery));
  if (res < 1 || subsample < 1 || subsample > 32 || res % subsample) {
    return ffi::Error::InvalidArgument("observe: subsample " + std::to_string(subsample) + " must be in [1, 32] and " +
                                       "divide res " + std::to_string(res));
  }
  if (!(max_depth > 0.f && max_depth < INFINITY)) {
    return ffi::Error::InvalidArgument("observe: max_depth must be positive and finite, got " +
                                       std::to_string(max_depth));
  }
  Split m;
  JS_RETURN_IF_ERROR(split("mask", mask.dimensions(), 2, nullptr, &m));
  if (m.dims[0] != a.n_envs || m.dims[1] > a.n_agents) {
    return ffi::Error::InvalidArgument("mask: expected shape (n_envs, n_viewers) with n_envs " +
                                       std::to_string(a.n_envs) + " and n_viewers at most " +
                                       std::to_string(a.n_agents) + ", got " + shape_string(mask.dimensions()));
  }
  JS_RETURN_IF_ERROR(same_batch("mask", m, a.batch));
  call->mask = reinterpret_cast<const bool*>(mask.untyped_data());
  call->n_viewers = m.dims[1];
  call->R = res;
  call->subsample = subsample;
  const int64_t n = call->views() * call->columns();
  JS_RETURN_IF_ERROR(wanted_output("rgb", rgb, 3 * n, &call->out.rgb));
  JS_RETURN_IF_ERROR(wanted_output("depth", depth, n, &call->out.depth));
  JS_RETURN_IF_ERROR(wanted_output("indices", indices, n, &call->out.indices));
  JS_RETURN_IF_ERROR(wanted_output("locations", locations, n, &call->out.locations));
  return ffi::Error::Success();
}

// Physics: decodes the agents (in and out) and the walls; physics reads no lights or texels.
struct PhysicsCall {
  SceneryArrays scenery;
  AgentShape agents;
  const float *angles, *positions, *velocity, *angvelocity;
  AgentArrays out;
  float* progress;
};

inline ffi::Error decode_physics(const F32& angles, const F32& positions, const F32& velocity,
                                 const F32& angvelocity, const I32& env_geometry, const F32& walls,
                                 const I32& wall_offsets, const GridBuffers& grid, F32Out& angles_out,
                                 F32Out& positions_out, F32Out& velocity_out, F32Out& angvelocity_out,
                                 F32Out& progress, PhysicsCall* call) {
  JS_RETURN_IF_ERROR(decode_agents(angles, positions, &call->agents));
  const AgentShape& a = call->agents;
  JS_RETURN_IF_ERROR(decode_vector("velocity", velocity, a, 2));
  JS_RETURN_IF_ERROR(decode_vector("angvelocity", angvelocity, a, 1));
  JS_RETURN_IF_ERROR(decode_scenery(env_geometry, walls, wall_offsets, nullptr, nullptr, nullptr, nullptr, nullptr,
                                    a.batch, a.n_envs, &call->scenery));
  JS_RETURN_IF_ERROR(decode_grid(grid, a.batch, &call->scenery));
  const int64_t n = a.batch * a.n_envs * a.n_agents;
  JS_RETURN_IF_ERROR(check_output("angles", angles_out->dimensions(), n));
  JS_RETURN_IF_ERROR(check_output("positions", positions_out->dimensions(), 2 * n));
  JS_RETURN_IF_ERROR(check_output("velocity", velocity_out->dimensions(), 2 * n));
  JS_RETURN_IF_ERROR(check_output("angvelocity", angvelocity_out->dimensions(), n));
  JS_RETURN_IF_ERROR(check_output("progress", progress->dimensions(), n));
  call->angles = angles.typed_data();
  call->positions = positions.typed_data();
  call->velocity = velocity.typed_data();
  call->angvelocity = angvelocity.typed_data();
  call->out = {angles_out->typed_data(), positions_out->typed_data(), velocity_out->typed_data(),
               angvelocity_out->typed_data()};
  call->progress = progress->typed_data();
  return ffi::Error::Success();
}

// Bake: points (*batch, P, 2) and point_geometry (*batch, P) play the part of agents and env_geometry.
struct BakeCall {
  SceneryArrays scenery;
  const float* points;
  int64_t n_points;  // over the whole batch
  float* light;
};

inline ffi::Error decode_bake(const F32& points, const I32& point_geometry, const F32& walls,
                              const I32& wall_offsets, const F32& lights, const I32& light_offsets, F32Out& light,
                              BakeCall* call) {
  Split p;
  const int64_t p_fixed[2] = {-1, 2};
  JS_RETURN_IF_ERROR(split("points", points.dimensions(), 2, p_fixed, &p));
  JS_RETURN_IF_ERROR(decode_scenery(point_geometry, walls, wall_offsets, &lights, &light_offsets, nullptr, nullptr,
                                    nullptr, p.batch, p.dims[0], &call->scenery));
  call->n_points = p.batch * p.dims[0];
  JS_RETURN_IF_ERROR(check_output("light", light->dimensions(), call->n_points));
  call->points = points.typed_data();
  call->light = light->typed_data();
  return ffi::Error::Success();
}

}  // namespace jaxstep
