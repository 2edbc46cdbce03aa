// SPDX-License-Identifier: MIT
#pragma once

#include <type_traits>

// One spelling for a template constraint: a requires-clause where the compiler
// has concepts, an enable_if parameter where it does not (C++17).
//
//   EASYCACHE_TEMPLATE_REQUIRES(class T, (std::is_integral_v<T>))
//   void f(T);
#if defined(__cpp_concepts) && __cpp_concepts >= 201907L && !defined(EASYCACHE_NO_CONCEPTS)
#define EASYCACHE_HAS_CONCEPTS 1
#define EASYCACHE_TEMPLATE_REQUIRES(TPARAM, CONSTRAINT) \
  template <TPARAM>                                     \
    requires(CONSTRAINT)
#else
#define EASYCACHE_HAS_CONCEPTS 0
#define EASYCACHE_TEMPLATE_REQUIRES(TPARAM, CONSTRAINT) \
  template <TPARAM, std::enable_if_t<(CONSTRAINT), int> = 0>
#endif

#if defined(__CUDACC__)
#define EASYCACHE_HOST_DEVICE __host__ __device__
#else
#define EASYCACHE_HOST_DEVICE
#endif
