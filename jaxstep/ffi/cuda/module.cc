// Python module exposing the CUDA handlers (defined in handlers.cu) as capsules for jax.ffi.
#include <pybind11/pybind11.h>

#include "xla/ffi/api/c_api.h"

extern "C" {
XLA_FFI_Error* JaxstepRenderCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* JaxstepObserveCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* JaxstepPhysicsCuda(XLA_FFI_CallFrame* call_frame);
XLA_FFI_Error* JaxstepBakeCuda(XLA_FFI_CallFrame* call_frame);
}

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "jaxstep's CUDA FFI handlers";
  m.def("registrations", []() {
    pybind11::dict d;
    d["jaxstep_render"] = pybind11::capsule(reinterpret_cast<void*>(JaxstepRenderCuda));
    d["jaxstep_observe"] = pybind11::capsule(reinterpret_cast<void*>(JaxstepObserveCuda));
    d["jaxstep_physics"] = pybind11::capsule(reinterpret_cast<void*>(JaxstepPhysicsCuda));
    d["jaxstep_bake"] = pybind11::capsule(reinterpret_cast<void*>(JaxstepBakeCuda));
    return d;
  });
}
