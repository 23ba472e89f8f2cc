#pragma once
// MPI helpers shared by dist.cpp and grad_reducer.cpp; only compiled with MPI.
#ifdef CONVNEXT_HAVE_MPI
#include <mpi.h>

#include <cstdint>

#include "core/tensor.h"

namespace cnx::dist::detail {

// Throws cnx::Error naming the call, the rank and MPI's message when rc is not MPI_SUCCESS.
void check(int rc, const char* what);
// MPI_FLOAT / MPI_DOUBLE; other dtypes cannot be all-reduced (throws).
MPI_Datatype mpi_type(DType dt);
// MPI_Bcast of any length (MPI counts are int).
void bcast_raw(void* data, int64_t bytes, int root);

}  // namespace cnx::dist::detail
#endif
