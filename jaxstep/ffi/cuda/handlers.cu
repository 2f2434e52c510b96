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

// A warp per agent: its lanes share out the walls and other agents, then take the min. Progress is written
// to its own buffer, so the inputs are all read before `advance_kernel` (next on the stream) overwrites them.
__global__ void progress_kernel(SceneryArrays s, const float* positions, const float* velocity, int n_agents, long n,
                                float fps, float radius, float* progress) {
  const long i = ((long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (i >= n) return;  // whole warps leave together
  float x = progress_item(s, positions, velocity, n_agents, fps, radius, i, lane, 32);
  for (int offset = 16; offset > 0; offset /= 2) x = fminf(x, __shfl_xor_sync(0xffffffff, x, offset));
  if (lane == 0) progress[i] = x;
}

__global__ void advance_kernel(const float* angles, const float* positions, const float* velocity,
                               const float* angvelocity, long n, float fps, const float* progress,
                               AgentArrays out) {
  const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) store_pose(out, i, advance(load_pose(angles, positions, velocity, angvelocity, i), progress[i], fps));
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
  const long n = c.agents.batch * c.agents.n_envs * c.agents.n_agents;
  if (n == 0) return ffi::Error::Success();
  progress_kernel<<<blocks_for(32 * n), BLOCK, 0, stream>>>(c.scenery, c.positions, c.velocity,
                                                           (int)c.agents.n_agents, n, fps, radius, c.progress);
  advance_kernel<<<blocks_for(n), BLOCK, 0, stream>>>(c.angles, c.positions, c.velocity, c.angvelocity, n, fps,
                                                      c.progress, c.out);
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
