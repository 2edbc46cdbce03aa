// The tensor container that models/train_digits_dit.py writes (docs/model.md):
//   "ECTNSR01", uint32 n, n × (name, int64), uint32 m, m × (name, uint32 ndim, uint32 dims[ndim], float32 data)
// little-endian, names uint32-length-prefixed ASCII, data row-major.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "sha256.hpp"

namespace dit {

/// A float32 tensor: its shape and its values, row-major.
struct tensor {
  std::vector<std::size_t> shape;
  std::vector<float> values;
};

/// Everything in one container file.
struct tensor_file {
  std::map<std::string, std::int64_t> ints;
  std::map<std::string, tensor> tensors;

  /// The integer `name`; throws std::runtime_error naming it when it is missing.
  std::int64_t integer(const std::string& name) const {
    auto it = ints.find(name);
    if (it == ints.end()) throw std::runtime_error("tensor file: no integer '" + name + "'");
    return it->second;
  }
  /// The tensor `name`, checked against `shape`; throws std::runtime_error naming both.
  const tensor& get(const std::string& name, const std::vector<std::size_t>& shape) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw std::runtime_error("tensor file: no tensor '" + name + "'");
    if (it->second.shape != shape)
      throw std::runtime_error("tensor file: '" + name + "' has shape " + shape_string(it->second.shape) +
                               ", expected " + shape_string(shape));
    return it->second;
  }

  static std::string shape_string(const std::vector<std::size_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }
};

/// The whole file as bytes; throws std::runtime_error naming the path when it cannot be read.
inline std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// The first word of a `sha256sum` line in `path` (64 hex digits).
inline std::string read_checksum(const std::string& path) {
  std::ifstream in(path);
  std::string digest;
  if (!(in >> digest) || digest.size() != 64) throw std::runtime_error("cannot read a SHA-256 digest from " + path);
  return digest;
}

/// Parses a container; throws std::runtime_error saying where it is malformed.
inline tensor_file parse_tensor_file(const std::vector<unsigned char>& bytes, const std::string& origin) {
  std::size_t at = 0;
  auto fail = [&](const std::string& what) {
    throw std::runtime_error(origin + ": " + what + " at byte " + std::to_string(at));
  };
  auto take = [&](void* out, std::size_t n) {
    if (bytes.size() - at < n) fail("truncated");
    std::memcpy(out, bytes.data() + at, n);
    at += n;
  };
  auto u32 = [&] {
    unsigned char b[4];
    take(b, 4);
    return std::uint32_t{b[0]} | std::uint32_t{b[1]} << 8 | std::uint32_t{b[2]} << 16 | std::uint32_t{b[3]} << 24;
  };
  auto name = [&] {
    const std::uint32_t length = u32();
    if (length > 256) fail("name of " + std::to_string(length) + " bytes");
    std::string s(length, '\0');
    take(&s[0], length);
    return s;
  };
  static_assert(sizeof(float) == 4, "float32 expected");

  char magic[8];
  take(magic, 8);
  if (std::memcmp(magic, "ECTNSR01", 8) != 0) fail("not an ECTNSR01 tensor file");
  tensor_file file;
  for (std::uint32_t i = 0, n = u32(); i < n; ++i) {
    std::string key = name();
    std::uint64_t low = u32(), high = u32();
    file.ints[key] = static_cast<std::int64_t>(low | high << 32);
  }
  for (std::uint32_t i = 0, n = u32(); i < n; ++i) {
    std::string key = name();
    tensor t;
    const std::uint32_t rank = u32();
    if (rank > 8) fail("tensor '" + key + "' of rank " + std::to_string(rank));
    std::size_t count = 1;
    for (std::uint32_t d = 0; d < rank; ++d) {
      t.shape.push_back(u32());
      count *= t.shape.back();
    }
    if (count > (bytes.size() - at) / 4) fail("tensor '" + key + "' runs past the end");
    t.values.resize(count);
    for (float& value : t.values) {
      const std::uint32_t word = u32();  // little-endian on any host
      std::memcpy(&value, &word, 4);
    }
    file.tensors[key] = std::move(t);
  }
  if (at != bytes.size()) fail("trailing data");
  return file;
}

/// Reads `path`; when `checksum_path` is not empty, first checks the file's SHA-256
/// against it and throws std::runtime_error naming both digests on a mismatch.
inline tensor_file load_tensor_file(const std::string& path, const std::string& checksum_path = "") {
  const std::vector<unsigned char> bytes = read_bytes(path);
  if (!checksum_path.empty()) {
    const std::string expected = read_checksum(checksum_path);
    const std::string actual = sha256_hex(bytes);
    if (actual != expected)
      throw std::runtime_error(path + ": SHA-256 " + actual + " does not match " + expected + " in " + checksum_path);
  }
  return parse_tensor_file(bytes, path);
}

}  // namespace dit
