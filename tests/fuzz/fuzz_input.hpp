// Decodes a fuzzer's byte string into choices. Every read takes bytes from the
// front; once the bytes run out every read returns its lowest value, so any
// input, including the empty one, is a valid program for the harness.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

namespace fuzz {

class input {
 public:
  input(const std::uint8_t* data, std::size_t size) noexcept : data_(data), left_(size) {}

  bool empty() const noexcept { return left_ == 0; }

  /// An integer in [low, high], taking as many bytes as the range needs.
  template <class Int>
  Int integer(Int low, Int high) noexcept {
    static_assert(std::is_integral_v<Int>);
    using U = std::make_unsigned_t<Int>;
    const std::uint64_t range = static_cast<std::uint64_t>(static_cast<U>(high) - static_cast<U>(low));
    std::uint64_t value = 0;
    for (std::uint64_t covered = 0; covered < range && left_ > 0; covered = (covered << 8) | 0xff) {
      value = (value << 8) | *data_++;
      --left_;
      if (covered > (std::numeric_limits<std::uint64_t>::max() >> 8)) break;
    }
    if (range != std::numeric_limits<std::uint64_t>::max()) value %= range + 1;
    return static_cast<Int>(static_cast<U>(static_cast<U>(low) + static_cast<U>(value)));
  }

  /// One of n choices, 0 to n − 1.
  std::size_t choice(std::size_t n) noexcept { return integer<std::size_t>(0, n - 1); }

  bool flag() noexcept { return integer<int>(0, 1) == 1; }

  /// A fraction in [0, 1] with 1/65535 resolution.
  double fraction() noexcept { return static_cast<double>(integer<std::uint16_t>(0, 65535)) / 65535.0; }

  /// All the bytes left, as they are (a file for a parser to read).
  std::string rest() {
    std::string bytes(reinterpret_cast<const char*>(data_), left_);
    data_ += left_;
    left_ = 0;
    return bytes;
  }

 private:
  const std::uint8_t* data_;
  std::size_t left_;
};

}  // namespace fuzz
