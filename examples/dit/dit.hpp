// The demo's video diffusion transformer, forward pass only, in Eigen.
//
// It is exactly the DiT of models/train_digits_dit.py (docs/model.md): patch
// embedding of each frame plus a fixed 3-D position embedding; timestep (sinusoidal,
// then an MLP) plus class embedding as the condition; `depth` blocks of multi-head
// self-attention and an MLP, each modulated by adaLN-Zero (shift, scale, gate from
// the condition); a modulated final layer; unpatchify. It predicts the flow velocity
// v = noise − x0 for a latent of `channels × frames × height × width` values.
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "tensor_file.hpp"

namespace dit {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The model's sizes, as stored in the weight file's integers.
struct dimensions {
  std::size_t frames = 0, height = 0, width = 0, channels = 0, patch = 0;
  std::size_t dim = 0, depth = 0, heads = 0, hidden = 0, classes = 0, freq_dim = 0;

  std::size_t tokens() const { return frames * (height / patch) * (width / patch); }
  std::size_t patch_size() const { return channels * patch * patch; }
  /// Values in one latent (channels × frames × height × width).
  std::size_t latent_size() const { return channels * frames * height * width; }
};

class model {
 public:
  /// Loads weights written by models/train_digits_dit.py; with `checksum_path`, checks
  /// the file's SHA-256 first. Throws std::runtime_error naming what is wrong.
  explicit model(const std::string& path, const std::string& checksum_path = "") {
    const tensor_file file = load_tensor_file(path, checksum_path);
    auto size = [&](const char* name) {
      const std::int64_t value = file.integer(name);
      if (value <= 0 || value > (1 << 20))
        throw std::runtime_error(path + ": " + name + " = " + std::to_string(value) + " is out of range");
      return static_cast<std::size_t>(value);
    };
    d_.frames = size("frames");
    d_.height = size("height");
    d_.width = size("width");
    d_.channels = size("channels");
    d_.patch = size("patch");
    d_.dim = size("dim");
    d_.depth = size("depth");
    d_.heads = size("heads");
    d_.hidden = size("hidden");
    d_.classes = size("classes");
    d_.freq_dim = size("freq_dim");
    if (d_.height % d_.patch || d_.width % d_.patch || d_.dim % d_.heads || d_.freq_dim % 2)
      throw std::runtime_error(path + ": inconsistent sizes (patch, heads or freq_dim do not divide)");

    const std::size_t dim = d_.dim;
    patch_embed_ = linear_from(file, "patch_embed", dim, d_.patch_size());
    pos_embed_ = matrix_from(file.get("pos_embed", {d_.tokens(), dim}));
    parameters_ -= static_cast<std::size_t>(pos_embed_.size());  // a fixed buffer, not a trained parameter
    time_fc1_ = linear_from(file, "time_fc1", dim, d_.freq_dim);
    time_fc2_ = linear_from(file, "time_fc2", dim, dim);
    class_embed_ = matrix_from(file.get("class_embed.weight", {d_.classes + 1, dim}));
    for (std::size_t b = 0; b < d_.depth; ++b) {
      const std::string prefix = "blocks." + std::to_string(b) + ".";
      block_weights block;
      block.qkv = linear_from(file, prefix + "qkv", 3 * dim, dim);
      block.proj = linear_from(file, prefix + "proj", dim, dim);
      block.fc1 = linear_from(file, prefix + "fc1", d_.hidden, dim);
      block.fc2 = linear_from(file, prefix + "fc2", dim, d_.hidden);
      block.ada = linear_from(file, prefix + "ada", 6 * dim, dim);
      blocks_.push_back(std::move(block));
    }
    final_ada_ = linear_from(file, "final_ada", 2 * dim, dim);
    final_linear_ = linear_from(file, "final_linear", d_.patch_size(), dim);

    const auto n = static_cast<Eigen::Index>(d_.tokens());
    const auto dim_index = static_cast<Eigen::Index>(dim);
    tokens_.resize(n, dim_index);
    normed_.resize(n, dim_index);
    attended_.resize(n, dim_index);
    projected_.resize(n, dim_index);
    qkv_.resize(n, 3 * dim_index);
    scores_.resize(n, n);
    hidden_.resize(n, static_cast<Eigen::Index>(d_.hidden));
    patches_.resize(n, static_cast<Eigen::Index>(d_.patch_size()));
    out_patches_.resize(n, static_cast<Eigen::Index>(d_.patch_size()));
  }

  const dimensions& sizes() const noexcept { return d_; }
  /// The null class (no conditioning), for the unconditional guidance branch.
  std::size_t null_class() const noexcept { return d_.classes; }
  /// Number of trained weights (the fixed position embedding is not counted).
  std::size_t parameters() const noexcept { return parameters_; }

  /// v = f(x, sigma, label) for one latent `x` (channels × frames × height × width, row-major).
  /// `sigma` is rounded to float32 first, as the trained model saw it. `label` < classes, or
  /// null_class(). Reuses its workspace: not safe to call concurrently on one model.
  void forward(const float* x, float sigma, std::size_t label, float* v) {
    if (label > d_.classes)
      throw std::invalid_argument("label " + std::to_string(label) + " out of range (classes " +
                                  std::to_string(d_.classes) + ", null class " + std::to_string(d_.classes) + ")");
    const auto dim = static_cast<Eigen::Index>(d_.dim);

    // Condition: MLP of the sinusoidal timestep embedding (in double, as in training), plus the class.
    const std::size_t half = d_.freq_dim / 2;
    Eigen::RowVectorXf frequencies(static_cast<Eigen::Index>(d_.freq_dim));
    for (std::size_t i = 0; i < half; ++i) {
      const double frequency = std::exp(-std::log(10000.0) * static_cast<double>(i) / static_cast<double>(half));
      const double angle = 1000.0 * static_cast<double>(sigma) * frequency;
      frequencies(static_cast<Eigen::Index>(i)) = static_cast<float>(std::cos(angle));
      frequencies(static_cast<Eigen::Index>(half + i)) = static_cast<float>(std::sin(angle));
    }
    Eigen::RowVectorXf condition = apply(time_fc2_, silu(apply(time_fc1_, frequencies)));
    condition += class_embed_.row(static_cast<Eigen::Index>(label));
    const Eigen::RowVectorXf activated = silu(condition);

    patchify(x);
    tokens_.noalias() = patches_ * patch_embed_.weight.transpose();
    tokens_.rowwise() += patch_embed_.bias;
    tokens_ += pos_embed_;

    for (const block_weights& block : blocks_) {
      const Eigen::RowVectorXf mod = apply(block.ada, activated);
      // Attention branch: x += gate1 · proj(attention(modulate(norm(x), shift1, scale1)))
      modulated_norm(mod.segment(0, dim), mod.segment(dim, dim));
      qkv_.noalias() = normed_ * block.qkv.weight.transpose();
      qkv_.rowwise() += block.qkv.bias;
      attention();
      projected_.noalias() = attended_ * block.proj.weight.transpose();
      projected_.rowwise() += block.proj.bias;
      tokens_ += (projected_.array().rowwise() * mod.segment(2 * dim, dim).array()).matrix();
      // MLP branch: x += gate2 · fc2(gelu(fc1(modulate(norm(x), shift2, scale2))))
      modulated_norm(mod.segment(3 * dim, dim), mod.segment(4 * dim, dim));
      hidden_.noalias() = normed_ * block.fc1.weight.transpose();
      hidden_.rowwise() += block.fc1.bias;
      hidden_ = hidden_.unaryExpr([](float u) {
        const float inner = 0.7978845608028654f * (u + 0.044715f * u * u * u);  // sqrt(2/pi)
        return 0.5f * u * (1.0f + std::tanh(inner));
      });
      projected_.noalias() = hidden_ * block.fc2.weight.transpose();
      projected_.rowwise() += block.fc2.bias;
      tokens_ += (projected_.array().rowwise() * mod.segment(5 * dim, dim).array()).matrix();
    }

    const Eigen::RowVectorXf mod = apply(final_ada_, activated);
    modulated_norm(mod.segment(0, dim), mod.segment(dim, dim));
    out_patches_.noalias() = normed_ * final_linear_.weight.transpose();
    out_patches_.rowwise() += final_linear_.bias;
    unpatchify(v);
  }

  /// As above for Eigen vectors of latent_size() values.
  void forward(const Eigen::VectorXf& x, float sigma, std::size_t label, Eigen::VectorXf& v) {
    const auto n = static_cast<Eigen::Index>(d_.latent_size());
    if (x.size() != n)
      throw std::invalid_argument("latent of " + std::to_string(x.size()) + " values, the model takes " +
                                  std::to_string(n));
    v.resize(n);
    forward(x.data(), sigma, label, v.data());
  }

 private:
  struct linear {
    matrix weight;  // [out, in], as PyTorch stores it
    Eigen::RowVectorXf bias;
  };
  struct block_weights {
    linear qkv, proj, fc1, fc2, ada;
  };

  matrix matrix_from(const tensor& t) {
    parameters_ += t.values.size();
    const auto rows = static_cast<Eigen::Index>(t.shape[0]);
    const auto cols = static_cast<Eigen::Index>(t.values.size() / t.shape[0]);
    return Eigen::Map<const matrix>(t.values.data(), rows, cols);
  }

  linear linear_from(const tensor_file& file, const std::string& name, std::size_t out, std::size_t in) {
    linear l;
    l.weight = matrix_from(file.get(name + ".weight", {out, in}));
    const tensor& bias = file.get(name + ".bias", {out});
    parameters_ += bias.values.size();
    l.bias = Eigen::Map<const Eigen::RowVectorXf>(bias.values.data(), static_cast<Eigen::Index>(out));
    return l;
  }

  static Eigen::RowVectorXf apply(const linear& l, const Eigen::RowVectorXf& in) {
    return in * l.weight.transpose() + l.bias;
  }

  static Eigen::RowVectorXf silu(const Eigen::RowVectorXf& in) {
    return in.unaryExpr([](float u) { return u / (1.0f + std::exp(-u)); });
  }

  // normed_ = LayerNorm(tokens_) · (1 + scale) + shift, per token (eps 1e-6, no affine).
  template <class Shift, class Scale>
  void modulated_norm(const Shift& shift, const Scale& scale) {
    const auto dim = static_cast<float>(d_.dim);
    for (Eigen::Index t = 0; t < tokens_.rows(); ++t) {
      const auto row = tokens_.row(t);
      const float mean = row.sum() / dim;
      const float variance = (row.array() - mean).square().sum() / dim;
      const float inverse = 1.0f / std::sqrt(variance + 1e-6f);
      normed_.row(t) = (((row.array() - mean) * inverse) * (1.0f + scale.array()) + shift.array()).matrix();
    }
  }

  // attended_ = concat over heads of softmax(Q Kᵀ / √d_head) V.
  void attention() {
    const auto dim = static_cast<Eigen::Index>(d_.dim);
    const auto head = dim / static_cast<Eigen::Index>(d_.heads);
    const auto n = tokens_.rows();
    const float scale = 1.0f / std::sqrt(static_cast<float>(head));
    for (Eigen::Index h = 0; h < static_cast<Eigen::Index>(d_.heads); ++h) {
      const auto q = qkv_.block(0, h * head, n, head);
      const auto k = qkv_.block(0, dim + h * head, n, head);
      const auto value = qkv_.block(0, 2 * dim + h * head, n, head);
      scores_.noalias() = (q * k.transpose()) * scale;
      for (Eigen::Index r = 0; r < n; ++r) {
        auto row = scores_.row(r);
        row = (row.array() - row.maxCoeff()).exp().matrix();
        row /= row.sum();
      }
      attended_.block(0, h * head, n, head).noalias() = scores_ * value;
    }
  }

  // Token t = (frame, patch row, patch column); its vector is (channel, row in patch, column in patch).
  void patchify(const float* x) {
    const std::size_t p = d_.patch, rows = d_.height / p, cols = d_.width / p;
    for (std::size_t f = 0; f < d_.frames; ++f)
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c)
          for (std::size_t ch = 0; ch < d_.channels; ++ch)
            for (std::size_t i = 0; i < p; ++i)
              for (std::size_t j = 0; j < p; ++j)
                patches_(static_cast<Eigen::Index>((f * rows + r) * cols + c),
                         static_cast<Eigen::Index>((ch * p + i) * p + j)) =
                    x[((ch * d_.frames + f) * d_.height + r * p + i) * d_.width + c * p + j];
  }

  void unpatchify(float* v) const {
    const std::size_t p = d_.patch, rows = d_.height / p, cols = d_.width / p;
    for (std::size_t f = 0; f < d_.frames; ++f)
      for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c)
          for (std::size_t ch = 0; ch < d_.channels; ++ch)
            for (std::size_t i = 0; i < p; ++i)
              for (std::size_t j = 0; j < p; ++j)
                v[((ch * d_.frames + f) * d_.height + r * p + i) * d_.width + c * p + j] =
                    out_patches_(static_cast<Eigen::Index>((f * rows + r) * cols + c),
                                 static_cast<Eigen::Index>((ch * p + i) * p + j));
  }

  dimensions d_;
  std::size_t parameters_ = 0;
  linear patch_embed_, time_fc1_, time_fc2_, final_ada_, final_linear_;
  matrix pos_embed_, class_embed_;
  std::vector<block_weights> blocks_;
  // Workspace, sized once.
  matrix tokens_, normed_, attended_, projected_, qkv_, scores_, hidden_, patches_, out_patches_;
};

}  // namespace dit
