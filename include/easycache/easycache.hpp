// easycache: runtime-adaptive caching for diffusion denoisers (EasyCache,
// arXiv 2507.02860), header-only. This header brings the controller, the
// configuration, the policies, the trace and the keyed hooks adapter; add the
// header of a backend for your tensor type (easycache/eigen.hpp,
// easycache/host_buffer.hpp, easycache/cuda.cuh, easycache/torch.hpp) or
// specialize easycache::tensor_traits.
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
#include "types.hpp"
