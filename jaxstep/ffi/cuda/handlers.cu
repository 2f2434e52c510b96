// CUDA handlers: one thread per item, calling the shared kernel math in kernels.h, on XLA's stream.
#include <cuda_runtime.h>

#include "jaxstep/ffi/buffers.h"

namespace jaxstep {
namespace {

constexpr int BLOCK = 256;

long blocks_for(long n) { return (n + BLOCK - 1) / BLOCK; }

ffi::Error launch_status() {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("CUDA launch failed: ") + cudaGetErrorString(err));
}

__global__ void render_kernel(SceneryArrays s, const float* angles, const float* positions, int n_agents, int R,
                              float half_width, float radius, long rays, RenderOutputs out) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < rays) render_item(s, angles, positions, n_agents, R, half_width, radius, i, out);
}

// Each block holds whole envs, so an env's agents can all read the old state before any writes the new:
// the outputs may alias the inputs.
__global__ void physics_kernel(SceneryArrays s, const float* angles, const float* positions, const float* velocity,
                               const float* angvelocity, int n_agents, long n, float fps, float radius,
                               AgentArrays out, float* progress) {
  const long i = ((long)blockIdx.x * blockDim.y + threadIdx.y) * n_agents + threadIdx.x;
  const bool active = i < n;
  float x = 0.f;
  Pose pose;
  if (active) {
    x = progress_item(s, positions, velocity, n_agents, fps, radius, i);
    pose = load_pose(angles, positions, velocity, angvelocity, i);
  }
  __syncthreads();
  if (active) {
    progress[i] = x;
    store_pose(out, i, advance(pose, x, fps));
  }
}

__global__ void bake_kernel(SceneryArrays s, const float* points, long n, float* light) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) light[i] = bake_item(s, points, i);
}

ffi::Error Render(cudaStream_t stream, F32 angles, F32 positions, I32 env_geometry, F32 walls, I32 wall_offsets,
                  F32 lights, I32 light_offsets, F32 texels, F32 baked, I32 texel_offsets, I32Out indices,
                  F32Out locations, F32Out dots, F32Out distances, F32Out screen, float half_width, float radius) {
  RenderCall c;
  JS_RETURN_IF_ERROR(decode_render(angles, positions, env_geometry, walls, wall_offsets, lights, light_offsets,
                                   texels, baked, texel_offsets, indices, locations, dots, distances, screen, &c));
  const long rays = c.agents.batch * c.agents.n_envs * c.agents.n_agents * c.R;
  if (rays == 0) return ffi::Error::Success();
  render_kernel<<<blocks_for(rays), BLOCK, 0, stream>>>(c.scenery, angles.typed_data(), positions.typed_data(),
                                                        (int)c.agents.n_agents, (int)c.R, half_width, radius,
                                                        rays, c.out);
  return launch_status();
}

ffi::Error Physics(cudaStream_t stream, F32 angles, F32 positions, F32 velocity, F32 angvelocity, I32 env_geometry,
                   F32 walls, I32 wall_offsets, F32Out angles_out, F32Out positions_out, F32Out velocity_out,
                   F32Out angvelocity_out, F32Out progress, float fps, float radius) {
  PhysicsCall c;
  JS_RETURN_IF_ERROR(decode_physics(angles, positions, velocity, angvelocity, env_geometry, walls, wall_offsets,
                                    angles_out, positions_out, velocity_out, angvelocity_out, progress, &c));
  const int A = (int)c.agents.n_agents;
  const long envs = c.agents.batch * c.agents.n_envs;
  if (envs == 0 || A == 0) return ffi::Error::Success();
  if (A > 1024) return ffi::Error::InvalidArgument("n_agents: at most 1024 agents per env on CUDA");
  const int envs_per_block = A >= BLOCK ? 1 : BLOCK / A;
  const dim3 block(A, envs_per_block);
  const long grid = (envs + envs_per_block - 1) / envs_per_block;
  physics_kernel<<<grid, block, 0, stream>>>(c.scenery, c.angles, c.positions, c.velocity, c.angvelocity, A,
                                             envs * A, fps, radius, c.out, c.progress);
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
                                  .Arg<I32>()  // env_geometry
                                  .Arg<F32>()  // walls
                                  .Arg<I32>()  // wall_offsets
                                  .Arg<F32>()  // lights
                                  .Arg<I32>()  // light_offsets
                                  .Arg<F32>()  // texels
                                  .Arg<F32>()  // baked
                                  .Arg<I32>()  // texel_offsets
                                  .Ret<I32>()  // indices
                                  .Ret<F32>()  // locations
                                  .Ret<F32>()  // dots
                                  .Ret<F32>()  // distances
                                  .Ret<F32>()  // screen
                                  .Attr<float>("half_width")
                                  .Attr<float>("radius"),
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
