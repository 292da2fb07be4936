// C ABI of Hone's c10d shim: a TCPStore rendezvous and libtorch's own
// process groups (Gloo for CPU tensors, NCCL for CUDA tensors through a
// plugin loaded at run time). Every call that can fail returns 0 on success
// or -1 with a malloc'ed message in *err (free it with hone_dist_free_error);
// no C++ exception crosses this boundary.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct HoneDist HoneDist;

// Joins the group: rank 0 serves the TCPStore on port, every rank connects
// to addr:port, then the Gloo group forms. nccl_plugin is the path of
// libhone_dist_nccl.so (NULL or "": no NCCL). Returns NULL on error.
HoneDist* hone_dist_init(const char* addr, uint16_t port, int world, int rank, int64_t timeout_ms,
                         const char* nccl_plugin, char** err);
// Broadcasts each tensor (an at::Tensor*, as tch's C_tensor) from rank 0, in place.
int hone_dist_broadcast(HoneDist* dist, const void* const* tensors, size_t n, char** err);
// Sums each tensor across ranks, in place.
int hone_dist_all_reduce(HoneDist* dist, const void* const* tensors, size_t n, char** err);
// Waits until every rank reaches the barrier.
int hone_dist_barrier(HoneDist* dist, char** err);
// Leaves the group and frees it.
void hone_dist_destroy(HoneDist* dist);
// Frees a message returned through err.
void hone_dist_free_error(char* err);

// Exported by the NCCL plugin: store points at a c10::intrusive_ptr<c10d::Store>,
// *out receives a new c10::intrusive_ptr<c10d::Backend>*.
typedef int (*hone_dist_nccl_create_fn)(const void* store, int rank, int world, int64_t timeout_ms,
                                        void** out, char** err);

#ifdef __cplusplus
}
#endif
