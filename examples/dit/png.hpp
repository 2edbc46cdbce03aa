// A minimal PNG writer (8-bit grayscale) and the clip-to-image layout of the demo.
//
// The image data are zlib-wrapped deflate *stored* blocks (no compression): no
// dependency, and the files are small at these sizes. CRC-32 and Adler-32 as in
// the PNG and zlib specifications.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace dit {

/// CRC-32 (ISO-HDLC, polynomial 0xEDB88320 reflected), as PNG chunks use.
inline std::uint32_t crc32(const unsigned char* data, std::size_t size, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t n = 0; n < 256; ++n) {
      std::uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

/// Adler-32, the zlib stream's checksum.
inline std::uint32_t adler32(const unsigned char* data, std::size_t size) {
  std::uint32_t a = 1, b = 0;
  for (std::size_t i = 0; i < size; ++i) {
    a = (a + data[i]) % 65521u;
    b = (b + a) % 65521u;
  }
  return (b << 16) | a;
}

/// A grayscale image, row-major, one byte a pixel.
struct gray_image {
  std::size_t width = 0, height = 0;
  std::vector<unsigned char> pixels;

  gray_image(std::size_t w, std::size_t h, unsigned char fill = 0) : width(w), height(h), pixels(w * h, fill) {}
  unsigned char& at(std::size_t x, std::size_t y) { return pixels[y * width + x]; }
};

/// The PNG file of `image` as bytes.
inline std::vector<unsigned char> encode_png(const gray_image& image) {
  if (image.width == 0 || image.height == 0 || image.pixels.size() != image.width * image.height)
    throw std::invalid_argument("png: a " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                                " image with " + std::to_string(image.pixels.size()) + " pixels");
  std::vector<unsigned char> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  auto put32 = [](std::vector<unsigned char>& to, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) to.push_back(static_cast<unsigned char>(v >> shift));
  };
  auto chunk = [&](const char* type, const std::vector<unsigned char>& data) {
    put32(out, static_cast<std::uint32_t>(data.size()));
    const std::size_t start = out.size();
    out.insert(out.end(), type, type + 4);
    out.insert(out.end(), data.begin(), data.end());
    put32(out, crc32(out.data() + start, out.size() - start));
  };

  std::vector<unsigned char> header;
  put32(header, static_cast<std::uint32_t>(image.width));
  put32(header, static_cast<std::uint32_t>(image.height));
  header.insert(header.end(), {8, 0, 0, 0, 0});  // 8 bits, grayscale, deflate, adaptive filters, no interlace
  chunk("IHDR", header);

  std::vector<unsigned char> raw;  // each row: filter type 0 (none), then its pixels
  raw.reserve(image.height * (image.width + 1));
  for (std::size_t y = 0; y < image.height; ++y) {
    raw.push_back(0);
    raw.insert(raw.end(), image.pixels.begin() + static_cast<std::ptrdiff_t>(y * image.width),
               image.pixels.begin() + static_cast<std::ptrdiff_t>((y + 1) * image.width));
  }
  std::vector<unsigned char> zlib = {0x78, 0x01};  // deflate, 32K window, no dictionary
  for (std::size_t at = 0;; at += 65535) {  // raw is never empty: every row has its filter byte
    const std::size_t length = std::min<std::size_t>(65535, raw.size() - at);
    const bool last = at + length == raw.size();
    zlib.push_back(last ? 1 : 0);  // BFINAL, BTYPE 00 (stored)
    zlib.push_back(static_cast<unsigned char>(length & 0xff));
    zlib.push_back(static_cast<unsigned char>(length >> 8));
    zlib.push_back(static_cast<unsigned char>(~length & 0xff));
    zlib.push_back(static_cast<unsigned char>((~length >> 8) & 0xff));
    zlib.insert(zlib.end(), raw.begin() + static_cast<std::ptrdiff_t>(at),
                raw.begin() + static_cast<std::ptrdiff_t>(at + length));
    if (last) break;
  }
  put32(zlib, adler32(raw.data(), raw.size()));
  chunk("IDAT", zlib);
  chunk("IEND", {});
  return out;
}

/// Writes `image` to `path` as PNG; throws std::runtime_error naming the path on failure.
inline void write_png(const std::string& path, const gray_image& image) {
  const std::vector<unsigned char> bytes = encode_png(image);
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!file) throw std::runtime_error("cannot write " + path);
}

/// Draws the frames of `clip` (frames × height × width in [-1, 1], clamped) side by
/// side into row `row` of a grid of cells `scale` pixels a value, `gap` pixels apart.
inline void draw_clip(gray_image& image, const Eigen::VectorXf& clip, std::size_t frames, std::size_t height,
                      std::size_t width, std::size_t scale, std::size_t gap, std::size_t top) {
  for (std::size_t f = 0; f < frames; ++f)
    for (std::size_t y = 0; y < height * scale; ++y)
      for (std::size_t x = 0; x < width * scale; ++x) {
        const float value = clip(static_cast<Eigen::Index>((f * height + y / scale) * width + x / scale));
        const float unit = (std::min(1.0f, std::max(-1.0f, value)) + 1.0f) * 0.5f;
        image.at(gap + f * (width * scale + gap) + x, top + y) =
            static_cast<unsigned char>(std::lround(unit * 255.0f));
      }
}

}  // namespace dit
