// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Deprecated path, kept so that existing includes compile: the header is now
// <easycache/backends/cuda.cuh> (docs/design.md, "Tree and layers"). This forwarding header
// goes away at 1.0.
#pragma once

#include "backends/cuda.cuh"
