// The NCCL half of Hone's c10d shim, built as its own shared library
// (libhone_dist_nccl.so, linked to libtorch_cuda.so) and loaded by
// hone_dist.cpp only when a collective gets CUDA tensors.
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "error.hpp"
#include "hone_dist.h"

extern "C" __attribute__((visibility("default"))) int hone_dist_nccl_create(
    const void* store, int rank, int world, int64_t timeout_ms, void** out, char** err) {
  return hone_dist::guarded(err, [&] {
    const auto& base = *static_cast<const c10::intrusive_ptr<c10d::Store>*>(store);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>("nccl", base), rank, world, opts);
    *out = new c10::intrusive_ptr<c10d::Backend>(std::move(group));
  });
}
