// The demo's trained video DiT and its helpers: the weight file (checksum, format),
// the C++ forward pass against outputs stored by the PyTorch model, the sampler
// through easycache, the metrics and the PNG writer.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>

#include "dit/dit.hpp"
#include "dit/metrics.hpp"
#include "dit/png.hpp"
#include "dit/sampler.hpp"
#include "dit/sha256.hpp"
#include "dit/tensor_file.hpp"

namespace {

const std::string models_dir = EASYCACHE_MODELS_DIR;
const std::string model_path = models_dir + "/digits_dit.bin";

std::vector<unsigned char> bytes_of(const std::string& s) { return std::vector<unsigned char>(s.begin(), s.end()); }

std::uint32_t big_endian(const std::vector<unsigned char>& b, std::size_t at) {
  return std::uint32_t{b[at]} << 24 | std::uint32_t{b[at + 1]} << 16 | std::uint32_t{b[at + 2]} << 8 | b[at + 3];
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

dit::model& trained_model() {
  static dit::model m(model_path, model_path + ".sha256");
  return m;
}

}  // namespace

TEST_CASE("sha256 matches the FIPS 180-4 examples", "[dit]") {
  CHECK(dit::sha256_hex(bytes_of("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(dit::sha256_hex(bytes_of("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(dit::sha256_hex(bytes_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("crc32 and adler32 match their check values", "[dit][png]") {
  const auto digits = bytes_of("123456789");
  CHECK(dit::crc32(digits.data(), digits.size()) == 0xCBF43926u);
  const auto word = bytes_of("Wikipedia");
  CHECK(dit::adler32(word.data(), word.size()) == 0x11E60398u);
}

TEST_CASE("a PNG decodes back to its pixels", "[dit][png]") {
  // 300 × 250: more than one 65535-byte stored block.
  dit::gray_image image(300, 250);
  for (std::size_t y = 0; y < image.height; ++y)
    for (std::size_t x = 0; x < image.width; ++x) image.at(x, y) = static_cast<unsigned char>((x * 7 + y * 3) % 256);
  const std::vector<unsigned char> png = dit::encode_png(image);

  const std::vector<unsigned char> signature = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  REQUIRE(std::vector<unsigned char>(png.begin(), png.begin() + 8) == signature);
  std::vector<std::string> types;
  std::vector<unsigned char> header, idat;
  for (std::size_t at = 8; at < png.size();) {
    const std::size_t length = big_endian(png, at);
    REQUIRE(at + 12 + length <= png.size());
    const std::string type(png.begin() + static_cast<std::ptrdiff_t>(at + 4),
                           png.begin() + static_cast<std::ptrdiff_t>(at + 8));
    CHECK(big_endian(png, at + 8 + length) == dit::crc32(png.data() + at + 4, length + 4));
    const auto data = png.begin() + static_cast<std::ptrdiff_t>(at + 8);
    if (type == "IHDR") header.assign(data, data + static_cast<std::ptrdiff_t>(length));
    if (type == "IDAT") idat.insert(idat.end(), data, data + static_cast<std::ptrdiff_t>(length));
    types.push_back(type);
    at += 12 + length;
  }
  CHECK(types == std::vector<std::string>{"IHDR", "IDAT", "IEND"});
  REQUIRE(header.size() == 13);
  CHECK(big_endian(header, 0) == 300);
  CHECK(big_endian(header, 4) == 250);
  CHECK(header[8] == 8);  // bit depth
  CHECK(header[9] == 0);  // grayscale

  // zlib: header, stored blocks, Adler-32 of the filtered rows.
  REQUIRE(idat.size() > 6);
  CHECK((idat[0] * 256 + idat[1]) % 31 == 0);
  std::vector<unsigned char> raw;
  std::size_t at = 2;
  bool last = false;
  while (!last) {
    REQUIRE(at + 5 <= idat.size());
    last = idat[at] & 1;
    CHECK((idat[at] >> 1) == 0);  // stored
    const std::size_t length = idat[at + 1] | std::size_t{idat[at + 2]} << 8;
    const std::size_t inverse = idat[at + 3] | std::size_t{idat[at + 4]} << 8;
    CHECK((length ^ inverse) == 0xffff);
    REQUIRE(at + 5 + length <= idat.size());
    raw.insert(raw.end(), idat.begin() + static_cast<std::ptrdiff_t>(at + 5),
               idat.begin() + static_cast<std::ptrdiff_t>(at + 5 + length));
    at += 5 + length;
  }
  REQUIRE(at + 4 == idat.size());
  CHECK(big_endian(idat, at) == dit::adler32(raw.data(), raw.size()));
  REQUIRE(raw.size() == 250 * 301);
  for (std::size_t y = 0; y < 250; ++y) {
    CHECK(raw[y * 301] == 0);  // filter: none
    for (std::size_t x = 0; x < 300; ++x)
      if (raw[y * 301 + 1 + x] != image.at(x, y)) FAIL("pixel " << x << "," << y << " differs");
  }
}

TEST_CASE("PSNR and SSIM: hand-computed cases", "[dit][metrics]") {
  const std::size_t frames = 2, height = 12, width = 13, n = frames * height * width;
  const Eigen::VectorXf zero = Eigen::VectorXf::Zero(n), fifth = Eigen::VectorXf::Constant(n, 0.2f);
  // In [0, 1] the values are 0.5 and 0.6: MSE 0.01, PSNR 20 dB.
  CHECK(dit::psnr(fifth, zero) == Approx(20.0).epsilon(1e-6));
  CHECK(std::isinf(dit::psnr(zero, zero)));
  // Values are clamped to [-1, 1] first: 5 and 1 are the same white.
  CHECK(std::isinf(dit::psnr(Eigen::VectorXf::Constant(n, 5.0f), Eigen::VectorXf::Ones(n))));
  // Constant frames: no variance, SSIM = (2·a·b + C1) / (a² + b² + C1).
  const double c1 = 1e-4, a = 0.5, b = 0.6;
  CHECK(dit::ssim(fifth, zero, frames, height, width) == Approx((2 * a * b + c1) / (a * a + b * b + c1)));
  const Eigen::VectorXf noise = dit::gaussian_noise(n, 3) * 0.3f;
  CHECK(dit::ssim(noise, noise, frames, height, width) == Approx(1.0));
  const Eigen::VectorXf noisier = noise + dit::gaussian_noise(n, 4) * 0.3f;
  CHECK(dit::ssim(noisier, noise, frames, height, width) < 0.9);
  CHECK(dit::psnr(noisier, noise) < dit::psnr(0.5f * (noise + noisier), noise));
  CHECK_THROWS_AS(dit::ssim(noise, noise, 1, 8, 8), std::invalid_argument);  // frames smaller than the window
}

TEST_CASE("the weight file matches its committed checksum", "[dit][model]") {
  const std::vector<unsigned char> bytes = dit::read_bytes(model_path);
  CHECK(bytes.size() <= 10u * 1024 * 1024);
  CHECK(dit::sha256_hex(bytes) == dit::read_checksum(model_path + ".sha256"));
}

TEST_CASE("a corrupted or malformed weight file is refused with a clear message", "[dit][model]") {
  std::vector<unsigned char> bytes = dit::read_bytes(model_path);
  const std::string copy = "dit_test_corrupted.bin";
  bytes[bytes.size() / 2] ^= 0x01;
  {
    std::ofstream out(copy, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  const std::string mismatch = message_of([&] { dit::model m(copy, model_path + ".sha256"); });
  CHECK(mismatch.find("does not match") != std::string::npos);
  CHECK(mismatch.find(copy) != std::string::npos);
  std::remove(copy.c_str());

  CHECK(message_of([&] { dit::model m("no/such/model.bin"); }).find("cannot open no/such/model.bin") !=
        std::string::npos);
  std::vector<unsigned char> truncated(bytes.begin(), bytes.begin() + 100);
  CHECK(message_of([&] { dit::parse_tensor_file(truncated, "t.bin"); }).find("t.bin: truncated") !=
        std::string::npos);
  CHECK(message_of([&] { dit::parse_tensor_file(bytes_of("NOTATENSORFILE"), "x.bin"); })
            .find("not an ECTNSR01 tensor file") != std::string::npos);
}

TEST_CASE("the C++ forward pass matches the PyTorch model's stored outputs", "[dit][model]") {
  dit::model& model = trained_model();
  const dit::tensor_file check = dit::load_tensor_file(models_dir + "/digits_dit_check.bin");
  const dit::dimensions& d = model.sizes();
  const std::size_t size = d.latent_size();
  const std::vector<std::size_t> shape = {2, d.channels, d.frames, d.height, d.width};
  const dit::tensor& input = check.get("input", shape);
  const dit::tensor& expected = check.get("output", shape);
  const dit::tensor& sigma = check.get("sigma", {2});
  const std::size_t labels[2] = {static_cast<std::size_t>(check.integer("label0")),
                                 static_cast<std::size_t>(check.integer("label1"))};
  CHECK(labels[1] == model.null_class());  // one conditional and one unconditional call
  std::vector<float> output(size);
  for (std::size_t b = 0; b < 2; ++b) {
    model.forward(input.values.data() + b * size, sigma.values[b], labels[b], output.data());
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < size; ++i) {
      worst = std::max(worst, static_cast<double>(std::abs(output[i] - expected.values[b * size + i])));
      scale = std::max(scale, static_cast<double>(std::abs(expected.values[b * size + i])));
    }
    INFO("input " << b << ": max |C++ - PyTorch| = " << worst << " (outputs up to " << scale << ")");
    CHECK(scale > 0.1);  // a real output, not zeros
    CHECK(worst < 1e-4);
  }
  CHECK_THROWS_AS(model.forward(input.values.data(), 0.5f, model.null_class() + 1, output.data()),
                  std::invalid_argument);
}

TEST_CASE("the sampler through a controller with tau 0 reproduces the uncached sampler exactly", "[dit][sampler]") {
  dit::model& model = trained_model();
  dit::sampler_settings settings;
  settings.steps = 8;
  dit::sampler sampler(model, settings);
  const Eigen::VectorXf uncached = sampler.run(7, 11);
  CHECK(sampler.calls() == 16);
  easycache::config cfg = easycache::config::wan21(settings.steps);
  cfg.threshold = 0;
  cfg.warmup_steps = 1;
  easycache::controller<Eigen::VectorXf> cache(cfg);
  const Eigen::VectorXf cached = sampler.run(7, 11, cache);
  CHECK(sampler.calls() == 16);
  CHECK(cache.stats().skips == 0);
  CHECK((cached.array() == uncached.array()).all());
  CHECK(sampler.run(7, 12).cwiseNotEqual(uncached).count() > 0);  // another seed, another clip
}

TEST_CASE("EasyCache at the Wan2.1 preset skips steps of the trained model and stays close", "[dit][sampler]") {
  dit::model& model = trained_model();
  dit::sampler sampler(model);  // 50 steps, shift 5, guidance 5
  const Eigen::VectorXf uncached = sampler.run(4, 5);
  easycache::controller<Eigen::VectorXf> cache(easycache::config::wan21(50));
  const Eigen::VectorXf cached = sampler.run(4, 5, cache);
  const double psnr = dit::psnr(cached, uncached);
  INFO(sampler.calls() << " calls, PSNR " << psnr << " dB");
  CHECK(sampler.calls() == cache.stats().calls);
  CHECK(sampler.calls() <= 60);  // at least 1.67x fewer than the 100 of the uncached sampler
  CHECK(psnr > 25.0);
  CHECK(std::isfinite(psnr));
}

TEST_CASE("multistep solvers through a controller: a skipped step's prediction enters the solver's history",
          "[dit][sampler]") {
  // UniPC and DPM-Solver++(2M) feed earlier outputs back. With a fixed set of
  // skipped steps, each predictor's cached run must equal a run in which the
  // skipped steps' outputs are written by hand from the predictor's formula:
  // then the solver's history holds exactly what the cache returned.
  dit::model& model = trained_model();
  const std::vector<bool> computed = {true, true, true, true, false, true, false, false, true, false, true, true};
  for (dit::solver method : {dit::solver::unipc, dit::solver::dpmpp_2m}) {
    dit::sampler_settings settings;
    settings.steps = computed.size();
    settings.method = method;
    dit::sampler sampler(model, settings);
    const Eigen::VectorXf uncached = sampler.run(2, 3);

    easycache::config cfg = easycache::config::wan21(settings.steps);
    cfg.threshold = 0;
    easycache::controller<Eigen::VectorXf> every_step(cfg);
    CHECK((sampler.run(2, 3, every_step).array() == uncached.array()).all());

    for (easycache::skip_predictor predictor : {easycache::skip_predictor::constant,
                                                easycache::skip_predictor::linear_in_timestep,
                                                easycache::skip_predictor::last_output}) {
      INFO(dit::name_of(method) << ", predictor " << static_cast<int>(predictor));
      cfg.predictor = predictor;
      easycache::controller<Eigen::VectorXf, easycache::step_mask_policy> cache(cfg,
                                                                                easycache::step_mask_policy(computed));
      const Eigen::VectorXf cached = sampler.run(2, 3, cache);
      CHECK(sampler.calls() == 2 * 8);

      struct kept {
        Eigen::VectorXf x_last, v_last, delta_prev;
        double t_last = 0, t_prev = 0;
        int computes = 0;
      } branches[2];
      const Eigen::VectorXf by_hand = sampler.run_custom(
          2, 3, [&](const easycache::step_info& info, const Eigen::VectorXf& x, Eigen::VectorXf& v, auto& denoiser) {
            kept& b = branches[info.branch];
            if (computed[info.index]) {
              denoiser(x, v, info);
              if (b.computes > 0) b.delta_prev = b.v_last - b.x_last;
              b.t_prev = b.t_last;
              b.x_last = x;
              b.v_last = v;
              b.t_last = info.timestep;
              ++b.computes;
              return;
            }
            const Eigen::VectorXf delta = b.v_last - b.x_last;
            if (predictor == easycache::skip_predictor::last_output) {
              v = b.x_last + delta;
            } else if (predictor == easycache::skip_predictor::linear_in_timestep && b.computes >= 2) {
              const auto w = static_cast<float>((info.timestep - b.t_last) / (b.t_last - b.t_prev));
              v = x + (delta + w * (delta - b.delta_prev));
            } else {
              v = x + delta;
            }
          });
      CHECK((cached - by_hand).cwiseAbs().maxCoeff() <= 1e-5f);
      CHECK((cached - uncached).cwiseAbs().maxCoeff() > 1e-3f);  // the skips did change the clip
      CHECK(cached.allFinite());
    }
  }
}

TEST_CASE("the multistep solvers land closer to the exact flow than Euler at the same steps", "[dit][sampler]") {
  // Gaussian data N(0, s²) has an exact flow-matching ODE: the data prediction
  // is D(x, σ) = c(σ)·x with c = (1 − σ)s² / ((1 − σ)²s² + σ²), and x scales
  // with the marginal's deviation sqrt((1 − σ)²s² + σ²), so the clean end is
  // x_start · s / deviation(σ_start). At 40 steps Euler is about 9x further from
  // it than UniPC and DPM-Solver++(2M) are.
  const double s2 = 0.25;
  auto deviation = [&](double sigma) { return std::sqrt((1 - sigma) * (1 - sigma) * s2 + sigma * sigma); };
  auto error_of = [&](dit::solver method) {
    const std::vector<double> sigmas = dit::sigmas_for(method, 40, 5.0);
    dit::multistep_solver multistep(method, sigmas);
    Eigen::VectorXf x = Eigen::VectorXf::Constant(1, 1.0f), v(1);
    for (std::size_t i = 0; i + 1 < sigmas.size(); ++i) {
      const double sigma = sigmas[i];
      const double c = (1 - sigma) * s2 / ((1 - sigma) * (1 - sigma) * s2 + sigma * sigma);
      v(0) = static_cast<float>((1 - c) * x(0) / sigma);  // v = (x − D) / σ
      if (method == dit::solver::euler) {
        x(0) += static_cast<float>(sigmas[i + 1] - sigma) * v(0);
      } else {
        x = multistep.step(i, x, v);
      }
    }
    return std::abs(static_cast<double>(x(0)) - std::sqrt(s2) / deviation(sigmas[0]));
  };
  const double euler = error_of(dit::solver::euler);
  for (dit::solver method : {dit::solver::unipc, dit::solver::dpmpp_2m}) {
    INFO(dit::name_of(method) << ": error " << error_of(method) << ", Euler " << euler);
    CHECK(error_of(method) < euler / 5);
  }
}
