// Run under mpirun -np P: each rank holds a contiguous shard of whole planes of
// a latent; a sharded run (statistics combined with easycache::mpi::allreduce)
// must take exactly the decisions of the single-process run of the same
// trajectory, and its outputs must match the corresponding slice up to
// summation order. Every rank also runs the single-process reference locally.
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>
#include <easycache/extras/mpi.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using view = easycache::host_buffer<float>;

constexpr std::size_t kPlanes = 12, kHeight = 8, kWidth = 8, kPlane = kHeight * kWidth;

// The denoiser: elementwise terms plus a global coupling (the latent's mean),
// which a sharded model must compute with a collective, as attention would.
float velocity(float x, float global_mean, double sigma, std::size_t element) {
  return float(0.6 * x + std::sin(4.0 * sigma + 0.05 * double(element)) * sigma + 0.3 * global_mean);
}

struct scenario {
  const char* name;
  easycache::config cfg;
};

int run(const scenario& sc, int rank, int ranks) {
  const easycache::config& cfg = sc.cfg;
  const std::size_t total = kPlanes * kPlane;
  // Shards of whole planes (so that a 2-D sampling pattern is the same globally).
  const std::size_t first_plane = kPlanes * static_cast<std::size_t>(rank) / static_cast<std::size_t>(ranks);
  const std::size_t last_plane = kPlanes * static_cast<std::size_t>(rank + 1) / static_cast<std::size_t>(ranks);
  const std::size_t begin = first_plane * kPlane, count = (last_plane - first_plane) * kPlane;

  std::vector<float> full_x(total), shard_x(count);
  for (std::size_t i = 0; i < total; ++i) full_x[i] = std::cos(0.07f * float(i));
  for (std::size_t i = 0; i < count; ++i) shard_x[i] = full_x[begin + i];

  easycache::controller<view> single(cfg), sharded(cfg);
  sharded.set_statistics_reduction(easycache::mpi::allreduce(MPI_COMM_WORLD));
  std::vector<std::vector<float>> full_out(cfg.branches, std::vector<float>(total)),
      shard_out(cfg.branches, std::vector<float>(count));
  int failures = 0;
  double worst = 0;
  for (std::size_t t = 0; t < cfg.steps; ++t) {
    const double sigma = 1.0 - double(t) / double(cfg.steps);
    for (std::size_t b = 0; b < cfg.branches; ++b) {
      view fx{full_x.data(), total}, fo{full_out[b].data(), total};
      single.step(fx, fo, {t, sigma, b}, [&](const view& in, view& v) {
        double sum = 0;
        for (std::size_t i = 0; i < total; ++i) sum += in.data[i];
        const float mean = float(sum / double(total));
        for (std::size_t i = 0; i < total; ++i) v.data[i] = velocity(in.data[i], mean, sigma, i) + float(b);
      });
      view sx{shard_x.data(), count}, so{shard_out[b].data(), count};
      sharded.step(sx, so, {t, sigma, b}, [&](const view& in, view& v) {
        double sum = 0;
        for (std::size_t i = 0; i < count; ++i) sum += in.data[i];
        MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        const float mean = float(sum / double(total));
        for (std::size_t i = 0; i < count; ++i) v.data[i] = velocity(in.data[i], mean, sigma, begin + i) + float(b);
      });
      if (single.trace().back().action != sharded.trace().back().action) {
        std::fprintf(stderr, "[%s] rank %d: step %zu branch %zu: single %s, sharded %s\n", sc.name, rank, t, b,
                     easycache::to_string(single.trace().back().action),
                     easycache::to_string(sharded.trace().back().action));
        ++failures;
      }
      for (std::size_t i = 0; i < count; ++i) {
        const double a = full_out[b][begin + i], c = shard_out[b][i];
        const double diff = std::abs(a - c) / (1.0 + std::abs(a));
        worst = std::max(worst, diff);
        if (diff > 1e-5) ++failures;
      }
    }
    // Guided Euler step (cond + 2·(cond − uncond) with two branches).
    for (std::size_t i = 0; i < total; ++i) {
      float v = full_out[0][i];
      if (cfg.branches > 1) v = full_out[1][i] + 3.0f * (full_out[0][i] - full_out[1][i]);
      full_x[i] -= v / float(cfg.steps);
    }
    for (std::size_t i = 0; i < count; ++i) {
      float v = shard_out[0][i];
      if (cfg.branches > 1) v = shard_out[1][i] + 3.0f * (shard_out[0][i] - shard_out[1][i]);
      shard_x[i] -= v / float(cfg.steps);
    }
  }
  int all_failures = 0;
  MPI_Allreduce(&failures, &all_failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  double all_worst = 0;
  MPI_Allreduce(&worst, &all_worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) {
    std::string pattern;
    for (const auto& r : sharded.trace())
      if (r.branch == 0) pattern += r.action == easycache::action::skip ? '.' : 'C';
    std::printf("%-22s %d ranks: %s  calls %zu skips %zu  max relative output difference %.2e  %s\n", sc.name,
                ranks, pattern.c_str(), sharded.stats().calls, sharded.stats().skips, all_worst,
                all_failures ? "FAILED" : "same decisions");
    if (sharded.stats().skips == 0) ++all_failures;  // the scenario must exercise skips
  }
  MPI_Bcast(&all_failures, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return all_failures;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  easycache::config reference;
  reference.steps = 40;
  reference.warmup_steps = 4;
  reference.threshold = 0.25;
  easycache::config guided = easycache::config::wan21(40);
  guided.threshold = 0.1;
  easycache::config comfy = easycache::config::comfyui(40, 1, kHeight, kWidth);
  comfy.sampling.stride = 2;
  comfy.threshold = 0.3;

  int failures = 0;
  for (const scenario& sc : {scenario{"reference", reference}, scenario{"wan21 two branches", guided},
                             scenario{"comfyui subsampled", comfy}})
    failures += run(sc, rank, ranks);
  MPI_Finalize();
  return failures == 0 ? 0 : 1;
}
