// The core's own tests compiled as a CUDA translation unit by nvcc: the core
// headers (and the Eigen backend) build in .cu files. They run on the host.
#include "../test_controller.cpp"
#include "../test_guidance.cpp"
