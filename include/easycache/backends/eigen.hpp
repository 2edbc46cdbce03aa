// easycache: runtime-adaptive caching for diffusion denoisers.
// SPDX-License-Identifier: MIT
//
// Eigen backend: dense Eigen::Matrix, Eigen::Array (vectors or matrices of any
// shape), Eigen::Map and Eigen::Ref of them, float or double. A matrix is
// treated as its flat sequence of elements; it must be contiguous.
#pragma once

#include <cstddef>
#include <type_traits>

#include <Eigen/Core>

#include "../error.hpp"
#include "host_buffer.hpp"
#include "../tensor_traits.hpp"
#include "../detail/format.hpp"

namespace easycache {

namespace detail {

template <class T>
inline constexpr bool is_eigen_plain_v = std::is_base_of_v<Eigen::PlainObjectBase<T>, T>;

template <class T>
inline constexpr bool is_eigen_mapped_v = std::is_base_of_v<Eigen::MapBase<T, Eigen::ReadOnlyAccessors>, T>;

template <class T, class = void>
inline constexpr bool is_eigen_dense_v = false;
template <class T>
inline constexpr bool is_eigen_dense_v<T, std::void_t<typename T::Scalar>> =
    (is_eigen_plain_v<T> || is_eigen_mapped_v<T>) &&
    (std::is_same_v<typename T::Scalar, float> || std::is_same_v<typename T::Scalar, double>);

template <class T, bool Plain = is_eigen_plain_v<T>>
struct eigen_output {};

// Owning Eigen objects can be sized by the controller (first step of a generation).
template <class T>
struct eigen_output<T, true> {
  static void resize_output(T& out, const T& like) {
    if (out.rows() != like.rows() || out.cols() != like.cols()) out.resize(like.rows(), like.cols());
  }
};

}  // namespace detail

template <class T>
struct tensor_traits<T, std::enable_if_t<detail::is_eigen_dense_v<T>>>
    : host_tensor_traits<T, typename T::Scalar>, detail::eigen_output<T> {
  using scalar = typename T::Scalar;
  static const scalar* data(const T& t) noexcept { return t.data(); }
  static auto data(T& t) noexcept { return t.data(); }
  static std::size_t size(const T& t) noexcept { return static_cast<std::size_t>(t.size()); }
  static void check(const T& t) {
    if (t.size() > 0 && (t.innerStride() != 1 || (t.outerSize() > 1 && t.outerStride() != t.innerSize())))
      throw error(detail::message("Eigen tensor is not contiguous (inner stride ", t.innerStride(), ", outer stride ",
                                  t.outerStride(), ", inner size ", t.innerSize(), "); copy it to a dense object"));
  }
};

}  // namespace easycache
