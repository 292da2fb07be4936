// Hone's c10d shim: libtorch's TCPStore and ProcessGroupGloo behind a C ABI,
// and ProcessGroupNCCL from a plugin loaded at run time, so a CPU-only image
// never needs libtorch_cuda.so.
#include "hone_dist.h"

#include <ATen/ATen.h>
#include <dlfcn.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.hpp"

struct HoneDist {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> gloo;
  c10::intrusive_ptr<c10d::Backend> nccl;  // created on the first CUDA collective
  int rank = 0;
  int world = 1;
  std::chrono::milliseconds timeout{0};
  std::string nccl_plugin;
};

namespace {

std::vector<at::Tensor> tensor_list(const void* const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (tensors[i] == nullptr) {
      throw std::invalid_argument("null tensor");
    }
    out.push_back(*static_cast<const at::Tensor*>(tensors[i]));
  }
  return out;
}

c10::intrusive_ptr<c10d::Backend> load_nccl(HoneDist& dist) {
  if (dist.nccl_plugin.empty()) {
    throw std::runtime_error(
        "CUDA tensors need NCCL, but this build has no NCCL plugin (libhone_dist_nccl.so)");
  }
  // Never closed: the backend's code lives in the plugin for the life of the process.
  void* handle = dlopen(dist.nccl_plugin.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    throw std::runtime_error("loading the NCCL plugin " + dist.nccl_plugin + ": " +
                             (why != nullptr ? why : "unknown error"));
  }
  auto create = reinterpret_cast<hone_dist_nccl_create_fn>(dlsym(handle, "hone_dist_nccl_create"));
  if (create == nullptr) {
    throw std::runtime_error(dist.nccl_plugin + " lacks hone_dist_nccl_create");
  }
  void* out = nullptr;
  char* err = nullptr;
  if (create(&dist.store, dist.rank, dist.world, dist.timeout.count(), &out, &err) != 0) {
    std::string message = err != nullptr ? err : "unknown error";
    std::free(err);
    throw std::runtime_error("creating the NCCL process group: " + message);
  }
  auto* backend = static_cast<c10::intrusive_ptr<c10d::Backend>*>(out);
  c10::intrusive_ptr<c10d::Backend> result = *backend;
  delete backend;
  return result;
}

// Gloo for CPU tensors, NCCL for CUDA tensors; one device type per call.
c10d::Backend& backend_for(HoneDist& dist, const std::vector<at::Tensor>& tensors) {
  bool cuda = !tensors.empty() && tensors.front().is_cuda();
  for (const auto& t : tensors) {
    if (t.is_cuda() != cuda) {
      throw std::invalid_argument("one collective cannot mix CPU and CUDA tensors");
    }
  }
  if (!cuda) {
    return *dist.gloo;
  }
  if (!dist.nccl) {
    dist.nccl = load_nccl(dist);
  }
  return *dist.nccl;
}

// Issues one collective per tensor, then waits for all of them (Gloo and
// NCCL take a list only as one tensor per device, all the same size).
template <class Issue>
void each_tensor(HoneDist& dist, const void* const* tensors, size_t n, Issue&& issue) {
  auto list = tensor_list(tensors, n);
  auto& backend = backend_for(dist, list);
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  works.reserve(list.size());
  for (auto& t : list) {
    std::vector<at::Tensor> one{t};
    works.push_back(issue(backend, one));
  }
  for (auto& w : works) {
    w->wait();
  }
}

}  // namespace

extern "C" HoneDist* hone_dist_init(const char* addr, uint16_t port, int world, int rank,
                                    int64_t timeout_ms, const char* nccl_plugin, char** err) {
  std::unique_ptr<HoneDist> dist(new (std::nothrow) HoneDist());
  if (!dist) {
    *err = hone_dist::copy_message("out of memory");
    return nullptr;
  }
  int rc = hone_dist::guarded(err, [&] {
    if (addr == nullptr || world < 1 || rank < 0 || rank >= world || timeout_ms <= 0) {
      throw std::invalid_argument("invalid rendezvous: need an address, 0 <= rank < world, timeout > 0");
    }
    dist->rank = rank;
    dist->world = world;
    dist->timeout = std::chrono::milliseconds(timeout_ms);
    dist->nccl_plugin = nccl_plugin != nullptr ? nccl_plugin : "";
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<size_t>(world);
    opts.waitWorkers = true;
    opts.timeout = dist->timeout;
    dist->store = c10::make_intrusive<c10d::TCPStore>(std::string(addr), opts);

    auto gloo_opts = c10d::ProcessGroupGloo::Options::create(dist->timeout);
    // GLOO_SOCKET_IFNAME picks the interface, as in torch.distributed.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0') {
      gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else {
      gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    dist->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", dist->store), rank, world, gloo_opts);
  });
  return rc == 0 ? dist.release() : nullptr;
}

extern "C" int hone_dist_broadcast(HoneDist* dist, const void* const* tensors, size_t n, char** err) {
  return hone_dist::guarded(err, [&] {
    each_tensor(*dist, tensors, n, [](c10d::Backend& b, std::vector<at::Tensor>& one) {
      c10d::BroadcastOptions opts;
      opts.rootRank = 0;
      return b.broadcast(one, opts);
    });
  });
}

extern "C" int hone_dist_all_reduce(HoneDist* dist, const void* const* tensors, size_t n, char** err) {
  return hone_dist::guarded(err, [&] {
    each_tensor(*dist, tensors, n, [](c10d::Backend& b, std::vector<at::Tensor>& one) {
      c10d::AllreduceOptions opts;
      opts.reduceOp = c10d::ReduceOp::SUM;
      return b.allreduce(one, opts);
    });
  });
}

extern "C" int hone_dist_barrier(HoneDist* dist, char** err) {
  return hone_dist::guarded(err, [&] { dist->gloo->barrier(c10d::BarrierOptions())->wait(); });
}

extern "C" void hone_dist_destroy(HoneDist* dist) {
  char* err = nullptr;
  // Destructors of process groups can throw (a peer gone); the group is
  // being dropped either way, so the message is discarded.
  hone_dist::guarded(&err, [&] { delete dist; });
  std::free(err);
}

extern "C" void hone_dist_free_error(char* err) {
  std::free(err);
}
