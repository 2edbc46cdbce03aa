// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// MPI backend of the statistics reduction, for a latent sharded across
// processes (sequence parallelism). Include it where <mpi.h> is available; the
// core headers never include it.
//
//   cache.set_statistics_reduction(easycache::mpi::allreduce(MPI_COMM_WORLD));
//
// With it every rank reads the same five numbers (four partial sums and the
// element count, summed over ranks) before each decision, so all ranks take the
// same decisions: one MPI_Allreduce of 40 bytes per decision step, none on
// forced steps. Every rank must call step() for every step and branch, as the
// collective requires.
#pragma once

#include <cstddef>
#include <functional>

// The C API is all that is used; keep Open MPI's and MPICH's deprecated C++ bindings out.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include "../error.hpp"
#include "../detail/format.hpp"

namespace easycache::mpi {

/// A reduction for controller::set_statistics_reduction over `communicator`.
/// Throws easycache::error if MPI reports an error (with MPI_ERRORS_RETURN).
inline std::function<void(double*, std::size_t)> allreduce(MPI_Comm communicator) {
  return [communicator](double* values, std::size_t count) {
    const int rc = MPI_Allreduce(MPI_IN_PLACE, values, static_cast<int>(count), MPI_DOUBLE, MPI_SUM, communicator);
    if (rc != MPI_SUCCESS) throw error(detail::message("MPI_Allreduce of the statistics failed (code ", rc, ")"));
  };
}

}  // namespace easycache::mpi
