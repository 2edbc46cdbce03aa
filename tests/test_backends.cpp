// Every host backend takes the same decisions on the same trajectory.
#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>
#include <type_traits>
#include <string>
#include <vector>

#include <easycache/easycache.hpp>
#include <easycache/backends/eigen.hpp>
#include <easycache/backends/host_buffer.hpp>

#include "helpers.hpp"

// A user's own tensor type, plugged in as docs/custom-tensor.md shows.
namespace my {
struct tensor {
  std::vector<float> values;
  std::vector<int> shape;
};
}  // namespace my

template <>
struct easycache::tensor_traits<my::tensor> : easycache::host_tensor_traits<my::tensor, float> {
  static const float* data(const my::tensor& t) { return t.values.data(); }
  static float* data(my::tensor& t) { return t.values.data(); }
  static std::size_t size(const my::tensor& t) { return t.values.size(); }
  static void resize_output(my::tensor& out, const my::tensor& like) {
    out.shape = like.shape;
    out.values.resize(like.values.size());
  }
};

static_assert(easycache::is_tensor_v<my::tensor>);
static_assert(easycache::is_resizable_tensor_v<my::tensor>);
static_assert(easycache::is_tensor_v<Eigen::VectorXf>);
static_assert(easycache::is_tensor_v<Eigen::ArrayXXd>);
static_assert(easycache::is_tensor_v<Eigen::Map<Eigen::VectorXf>>);
static_assert(easycache::is_tensor_v<Eigen::Ref<Eigen::VectorXd>>);
static_assert(easycache::is_tensor_v<easycache::host_buffer<float>>);
static_assert(!easycache::is_resizable_tensor_v<easycache::host_buffer<float>>);
static_assert(!easycache::is_tensor_v<std::vector<float>>);
static_assert(!easycache::is_tensor_v<Eigen::VectorXi>);
#if EASYCACHE_HAS_CONCEPTS
static_assert(easycache::tensor<Eigen::MatrixXf>);
static_assert(!easycache::tensor<int>);
#endif

namespace {

constexpr std::size_t kSteps = 24;
constexpr std::size_t kSize = 96;

easycache::config config() {
  easycache::config cfg;
  cfg.steps = kSteps;
  cfg.warmup_steps = 3;
  cfg.threshold = 0.3;
  cfg.branches = 2;
  return cfg;
}

// The scripted input of step t, element i, and the denoiser, on plain numbers.
double input(std::size_t t, std::size_t i) {
  return std::sin(0.1 * double(i)) * (1.0 - double(t) / kSteps) + 0.05 * double(t);
}
double denoise(double x, std::size_t branch) { return branch == 0 ? 2.0 * x + 1.0 : -x + 0.5 * x * x; }

// Copies the elements of one tensor into another of the same size.
template <class Tensor>
void store(const Tensor& from, Tensor& to) {
  if constexpr (std::is_same_v<Tensor, easycache::host_buffer<float>> ||
                std::is_same_v<Tensor, easycache::host_buffer<double>>) {
    std::copy(from.data, from.data + from.size, to.data);
  } else {
    to = from;
  }
}

// Runs the script on any tensor type through make(values) and values(tensor).
template <class Tensor, class Make, class Values>
std::string run(Make make, Values values, std::vector<double>* last_output = nullptr) {
  easycache::controller<Tensor> cache(config());
  for (std::size_t t = 0; t < kSteps; ++t) {
    std::vector<double> x(kSize);
    for (std::size_t i = 0; i < kSize; ++i) x[i] = input(t, i);
    for (std::size_t b = 0; b < 2; ++b) {
      auto in = make(x);
      auto out = make(std::vector<double>(kSize, 0.0));
      cache.step(in.tensor(), out.tensor(), {t, 0.0, b}, [&](const Tensor& xt, Tensor& v) {
        const std::vector<double> xs = values(xt);
        std::vector<double> vs(kSize);
        for (std::size_t i = 0; i < kSize; ++i) vs[i] = denoise(xs[i], b);
        // Write through the output (a view must not be rebound to other memory).
        auto made = make(vs);
        store(made.tensor(), v);
      });
      if (last_output && b == 0) *last_output = values(out.tensor());
    }
  }
  return test::pattern(cache.trace(), 0) + "/" + test::pattern(cache.trace(), 1);
}

// Owning holders that give a Tensor& for each type.
template <class T>
struct owned {
  T value;
  T& tensor() { return value; }
};

template <class Scalar>
struct raw {
  std::shared_ptr<std::vector<Scalar>> memory;
  easycache::host_buffer<Scalar> view;
  easycache::host_buffer<Scalar>& tensor() { return view; }
};

template <class Scalar>
raw<Scalar> make_raw(const std::vector<double>& v) {
  auto memory = std::make_shared<std::vector<Scalar>>(v.begin(), v.end());
  return {memory, {memory->data(), memory->size()}};
}

}  // namespace

TEST_CASE("Eigen and host buffers and a user type take the same decisions", "[backends]") {
  std::vector<double> reference_output;
  const std::string reference = run<Eigen::VectorXd>(
      [](const std::vector<double>& v) {
        return owned<Eigen::VectorXd>{Eigen::Map<const Eigen::VectorXd>(v.data(), Eigen::Index(v.size()))};
      },
      [](const Eigen::VectorXd& t) { return std::vector<double>(t.data(), t.data() + t.size()); }, &reference_output);
  INFO("reference pattern " << reference);
  CHECK(reference.find('S') != std::string::npos);
  CHECK(reference.find('C', 4) != std::string::npos);

  std::vector<double> float_output;
  CHECK(run<Eigen::VectorXf>(
            [](const std::vector<double>& v) {
              Eigen::VectorXf t(Eigen::Index(v.size()));
              for (std::size_t i = 0; i < v.size(); ++i) t(Eigen::Index(i)) = float(v[i]);
              return owned<Eigen::VectorXf>{t};
            },
            [](const Eigen::VectorXf& t) { return std::vector<double>(t.data(), t.data() + t.size()); },
            &float_output) == reference);
  for (std::size_t i = 0; i < kSize; ++i) CHECK(float_output[i] == Approx(reference_output[i]).epsilon(1e-5));

  CHECK(run<Eigen::ArrayXXf>(
            [](const std::vector<double>& v) {
              Eigen::ArrayXXf t(8, Eigen::Index(v.size() / 8));
              for (std::size_t i = 0; i < v.size(); ++i) t.data()[i] = float(v[i]);
              return owned<Eigen::ArrayXXf>{t};
            },
            [](const Eigen::ArrayXXf& t) { return std::vector<double>(t.data(), t.data() + t.size()); }) ==
        reference);

  CHECK(run<Eigen::MatrixXd>(
            [](const std::vector<double>& v) {
              return owned<Eigen::MatrixXd>{Eigen::Map<const Eigen::MatrixXd>(v.data(), 12, Eigen::Index(v.size() / 12))};
            },
            [](const Eigen::MatrixXd& t) { return std::vector<double>(t.data(), t.data() + t.size()); }) == reference);

  CHECK(run<easycache::host_buffer<float>>(make_raw<float>, [](const easycache::host_buffer<float>& b) {
          return std::vector<double>(b.data, b.data + b.size);
        }) == reference);
  CHECK(run<easycache::host_buffer<double>>(make_raw<double>, [](const easycache::host_buffer<double>& b) {
          return std::vector<double>(b.data, b.data + b.size);
        }) == reference);

  CHECK(run<my::tensor>(
            [](const std::vector<double>& v) {
              return owned<my::tensor>{my::tensor{std::vector<float>(v.begin(), v.end()), {int(v.size())}}};
            },
            [](const my::tensor& t) { return std::vector<double>(t.values.begin(), t.values.end()); }) == reference);
}

TEST_CASE("Eigen maps write through to the caller's memory", "[backends][eigen]") {
  using map = Eigen::Map<Eigen::VectorXf>;
  easycache::config cfg;
  cfg.steps = 6;
  cfg.warmup_steps = 2;
  cfg.threshold = 1.0;
  easycache::controller<map> cache(cfg);
  std::vector<float> x(16), out(16);
  for (std::size_t t = 0; t < 6; ++t) {
    for (float& e : x) e = float(t);
    map xm(x.data(), 16), om(out.data(), 16);
    cache.step(xm, om, {t}, [](const map& in, map& o) { o = in.array() + 8.0f; });
    for (float e : out) CHECK(e == float(t) + 8.0f);
  }
  CHECK(cache.stats().skips == 3);
}

TEST_CASE("an owning output is resized by the controller on a skipped step", "[backends][eigen]") {
  easycache::config cfg;
  cfg.steps = 4;
  cfg.warmup_steps = 2;
  cfg.threshold = 1.0;
  easycache::controller<Eigen::ArrayXXf> cache(cfg);
  for (std::size_t t = 0; t < 4; ++t) {
    Eigen::ArrayXXf x = Eigen::ArrayXXf::Constant(3, 5, float(t)), out;  // `out` starts empty
    cache.step(x, out, {t}, [](const Eigen::ArrayXXf& in, Eigen::ArrayXXf& o) { o = in + 8.0f; });
    CHECK(out.rows() == 3);
    CHECK(out.cols() == 5);
    CHECK((out == x + 8.0f).all());
  }
  CHECK(cache.trace()[2].action == easycache::action::skip);
}
