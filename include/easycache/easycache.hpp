// easycache: runtime-adaptive caching for diffusion denoisers (EasyCache,
// arXiv 2507.02860), header-only. This header brings the controller, the
// configuration, the policies, the trace and the keyed hooks adapter; add the
// header of a backend for your tensor type (easycache/backends/eigen.hpp,
// host_buffer.hpp, cuda.cuh, torch.hpp), or specialize easycache::tensor_traits
// (easycache/view_traits.hpp: one view() to a supported tensor). Opt-in extras:
// easycache/extras/batch.hpp, replay.hpp, mpi.hpp.
// SPDX-License-Identifier: MIT
#pragma once

#define EASYCACHE_VERSION_MAJOR 0
#define EASYCACHE_VERSION_MINOR 1
#define EASYCACHE_VERSION_PATCH 0

#include "config.hpp"
#include "controller.hpp"
#include "error.hpp"
#include "hooks.hpp"
#include "peer_summary.hpp"
#include "policy.hpp"
#include "tensor_traits.hpp"
#include "trace.hpp"
#include "view_traits.hpp"
#include "types.hpp"
