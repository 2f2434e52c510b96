// CPU handlers: loops over items, calling the shared kernel math in kernels.h.
#include <pybind11/pybind11.h>

#include "jaxstep/ffi/buffers.h"

namespace jaxstep {
namespace {

ffi::Error Render(F32 angles, F32 positions, I32 env_geometry, F32 walls, I32 wall_offsets, F32 lights,
                  I32 light_offsets, F32 texels, F32 baked, I32 texel_offsets, I32Out indices, F32Out locations,
                  F32Out dots, F32Out distances, F32Out screen, float half_width, float radius) {
  RenderCall c;
  JS_RETURN_IF_ERROR(decode_render(angles, positions, env_geometry, walls, wall_offsets, lights, light_offsets,
                                   texels, baked, texel_offsets, indices, locations, dots, distances, screen, &c));
  const long rays = c.agents.batch * c.agents.n_envs * c.agents.n_agents * c.R;
  for (long i = 0; i < rays; i++) {
    render_item(c.scenery, angles.typed_data(), positions.typed_data(), (int)c.agents.n_agents, (int)c.R,
                half_width, radius, i, c.out);
  }
  return ffi::Error::Success();
}

ffi::Error Physics(F32 angles, F32 positions, F32 velocity, F32 angvelocity, I32 env_geometry, F32 walls,
                   I32 wall_offsets, F32Out angles_out, F32Out positions_out, F32Out velocity_out,
                   F32Out angvelocity_out, F32Out progress, float fps, float radius) {
  PhysicsCall c;
  JS_RETURN_IF_ERROR(decode_physics(angles, positions, velocity, angvelocity, env_geometry, walls, wall_offsets,
                                    angles_out, positions_out, velocity_out, angvelocity_out, progress, &c));
  const int A = (int)c.agents.n_agents;
  const long n = c.agents.batch * c.agents.n_envs * A;
  // Every progress first: the outputs may alias the inputs, and each agent's progress reads all of its env.
  for (long i = 0; i < n; i++) {
    c.progress[i] = progress_item(c.scenery, c.positions, c.velocity, A, fps, radius, i);
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
                                  .Arg<jaxstep::I32>()  // env_geometry
                                  .Arg<jaxstep::F32>()  // walls
                                  .Arg<jaxstep::I32>()  // wall_offsets
                                  .Arg<jaxstep::F32>()  // lights
                                  .Arg<jaxstep::I32>()  // light_offsets
                                  .Arg<jaxstep::F32>()  // texels
                                  .Arg<jaxstep::F32>()  // baked
                                  .Arg<jaxstep::I32>()  // texel_offsets
                                  .Ret<jaxstep::I32>()  // indices
                                  .Ret<jaxstep::F32>()  // locations
                                  .Ret<jaxstep::F32>()  // dots
                                  .Ret<jaxstep::F32>()  // distances
                                  .Ret<jaxstep::F32>()  // screen
                                  .Attr<float>("half_width")
                                  .Attr<float>("radius"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstepPhysicsCpu, jaxstep::Physics,
                              jaxstep::ffi::Ffi::Bind()
                                  .Arg<jaxstep::F32>()  // angles
                                  .Arg<jaxstep::F32>()  // positions
                                  .Arg<jaxstep::F32>()  // velocity
                                  .Arg<jaxstep::F32>()  // angvelocity
                                  .Arg<jaxstep::I32>()  // env_geometry
                                  .Arg<jaxstep::F32>()  // walls
                                  .Arg<jaxstep::I32>()  // wall_offsets
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
    d["jaxstep_physics"] = capsule(JaxstepPhysicsCpu);
    d["jaxstep_bake"] = capsule(JaxstepBakeCpu);
    return d;
  });
}
