// The demo's DiT as a TorchScript module (models/digits_dit.pt, exported by
// models/export_torchscript.py): the committed file is the one exported, and
// LibTorch's forward pass of it is the Eigen forward pass of digits_dit.bin
// (examples/dit/dit.hpp) to float32 tolerance, for batches of one and two.
#include <torch/script.h>

// After LibTorch: c10's logging header defines a glog-style CHECK (fatal on
// failure, silent on success) that would otherwise replace Catch's.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "dit/dit.hpp"
#include "dit/sampler.hpp"
#include "dit/sha256.hpp"
#include "dit/tensor_file.hpp"

namespace {
const std::string models = EASYCACHE_MODELS_DIR;

// Largest |a − b| between the module's output and the Eigen forward pass.
double largest_difference(torch::jit::Module& module, dit::model& eigen, const std::vector<std::uint64_t>& seeds,
                          const std::vector<float>& sigmas, const std::vector<std::size_t>& labels) {
  const dit::dimensions& d = eigen.sizes();
  const auto batch = static_cast<std::int64_t>(seeds.size());
  const auto n = static_cast<std::int64_t>(d.latent_size());
  at::Tensor x = at::empty({batch, std::int64_t(d.channels), std::int64_t(d.frames), std::int64_t(d.height),
                            std::int64_t(d.width)});
  std::vector<Eigen::VectorXf> inputs;
  for (std::int64_t b = 0; b < batch; ++b) {
    inputs.push_back(dit::gaussian_noise(d.latent_size(), seeds[std::size_t(b)]));
    std::memcpy(x[b].data_ptr<float>(), inputs.back().data(), std::size_t(n) * sizeof(float));
  }
  const at::Tensor sigma = at::tensor(sigmas);
  std::vector<std::int64_t> label_values(labels.begin(), labels.end());
  const at::Tensor label = at::tensor(label_values);
  const at::Tensor out = module.forward({x, sigma, label}).toTensor().contiguous();
  REQUIRE(out.sizes() == x.sizes());
  double largest = 0;
  Eigen::VectorXf v(n);
  for (std::int64_t b = 0; b < batch; ++b) {
    eigen.forward(inputs[std::size_t(b)], sigmas[std::size_t(b)], labels[std::size_t(b)], v);
    const float* got = out[b].data_ptr<float>();
    for (std::int64_t i = 0; i < n; ++i) largest = std::max(largest, double(std::abs(got[i] - v(i))));
  }
  return largest;
}
}  // namespace

TEST_CASE("the TorchScript module is the exported file", "[torchscript]") {
  const std::vector<unsigned char> bytes = dit::read_bytes(models + "/digits_dit.pt");
  CHECK(dit::sha256_hex(bytes) == dit::read_checksum(models + "/digits_dit.pt.sha256"));
}

TEST_CASE("the TorchScript module's forward pass is the Eigen forward pass", "[torchscript]") {
  torch::jit::Module module = torch::jit::load(models + "/digits_dit.pt");
  module.eval();
  c10::InferenceMode inference;
  dit::model eigen(models + "/digits_dit.bin", models + "/digits_dit.bin.sha256");
  // Float32 forward passes of four transformer blocks that sum in different
  // orders (matrix products, softmax) differ by a few 1e-6; 1e-4 leaves a wide
  // margin while any wrong weight, layer or layout differs by far more (the
  // outputs are of order 1).
  const double tolerance = 1e-4;
  CHECK(largest_difference(module, eigen, {11}, {0.7f}, {3}) < tolerance);
  CHECK(largest_difference(module, eigen, {12, 13}, {0.95f, 0.05f}, {eigen.null_class(), 8}) < tolerance);
  CHECK(largest_difference(module, eigen, {14, 15}, {0.5f, 0.5f}, {1, eigen.null_class()}) < tolerance);
}
