// A sharded denoiser loop (sequence parallelism over MPI ranks): each rank owns
// a slice of the latent's frames; the model needs one collective per call (its
// "attention" reads the global mean), and easycache needs one per decision step
// to combine its statistics, so that every rank takes the same decision.
//
//   mpirun -np 2 build/examples/mpi_sharded
#include <easycache/easycache.hpp>
#include <easycache/backends/host_buffer.hpp>
#include <easycache/extras/mpi.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  const std::size_t frames = 16, frame_size = 32 * 32, steps = 30;
  const auto first = frames * static_cast<std::size_t>(rank) / static_cast<std::size_t>(ranks);
  const auto last = frames * static_cast<std::size_t>(rank + 1) / static_cast<std::size_t>(ranks);
  const std::size_t local = (last - first) * frame_size, total = frames * frame_size;

  std::vector<float> x(local), v(local);
  for (std::size_t i = 0; i < local; ++i) x[i] = std::sin(0.01f * static_cast<float>(first * frame_size + i));
  easycache::host_buffer<float> input{x.data(), local}, output{v.data(), local};

  easycache::config cfg = easycache::config::hunyuan_video(steps);
  cfg.threshold = 0.1;
  easycache::controller<easycache::host_buffer<float>> cache(cfg);
  cache.set_statistics_reduction(easycache::mpi::allreduce(MPI_COMM_WORLD));  // the one line MPI needs

  for (std::size_t t = 0; t < steps; ++t) {
    const double sigma = 1.0 - static_cast<double>(t) / steps;
    cache.step(input, output, {t, sigma}, [&](const easycache::host_buffer<float>& in, easycache::host_buffer<float>& out) {
      double sum = 0;
      for (std::size_t i = 0; i < in.size; ++i) sum += in.data[i];
      MPI_Allreduce(MPI_IN_PLACE, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);  // the model's own collective
      const float mean = static_cast<float>(sum / static_cast<double>(total));
      for (std::size_t i = 0; i < in.size; ++i)
        out.data[i] = 0.7f * in.data[i] + 0.3f * mean + static_cast<float>(std::cos(3 * sigma) * sigma);
    });
    for (std::size_t i = 0; i < local; ++i) x[i] -= v[i] / static_cast<float>(steps);
  }

  std::string pattern;
  for (const auto& r : cache.trace()) pattern += r.action == easycache::action::skip ? '.' : 'C';
  // Every rank took the same decisions; show them side by side.
  for (int r = 0; r < ranks; ++r) {
    if (r == rank)
      std::printf("rank %d/%d, frames %zu-%zu: %s (%zu calls of %zu)\n", rank, ranks, first, last - 1, pattern.c_str(),
                  cache.stats().calls, steps);
    std::fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  MPI_Finalize();
  return 0;
}
