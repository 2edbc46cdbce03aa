# Checks the include graph of include/easycache against its layers
# (docs/design.md, "Layers"): a header includes only headers of its own layer
# or of lower ones, so the graph has no cycle, and the kernels know nothing of
# the configuration or the controller.
# Every header must be listed; a new one is placed here.
#   cmake -DINCLUDE_DIR=<repository>/include/easycache -P check_layers.cmake
cmake_minimum_required(VERSION 3.16)
set(layer_0 detail/format.hpp detail/float32.hpp detail/macros.hpp detail/simd.hpp half.hpp detail/half_convert.hpp)  # standard library only
set(layer_1 error.hpp types.hpp sampling.hpp tensor_traits.hpp)  # what a tensor and its passes are told
set(layer_2 detail/host_kernels.hpp detail/mixed_kernels.hpp detail/scoped_kernels.hpp detail/device_passes.hpp detail/cuda_kernels.cuh)  # kernels
set(layer_3 config.hpp decision.hpp)  # the configuration and a decision's vocabulary
set(layer_4 detail/generation.hpp detail/step_sequencer.hpp detail/anchor_measurement.hpp detail/skip_prediction.hpp
    detail/tensor_ops.hpp detail/invoke.hpp detail/peer_rules.hpp detail/window.hpp detail/policy_support.hpp)  # the controller's parts
set(layer_5 policy.hpp trace.hpp controller.hpp view_traits.hpp hooks.hpp peer_summary.hpp easycache.hpp)  # the core
set(layer_6 backends/eigen.hpp backends/host_buffer.hpp backends/cuda.cuh backends/torch.hpp
    extras/batch.hpp extras/replay.hpp extras/mpi.hpp)  # backends and extras
set(layer_7 eigen.hpp host_buffer.hpp torch.hpp cuda.cuh batch.hpp replay.hpp mpi.hpp)  # deprecated forwarding paths

function(layer_of header out)
  foreach(n RANGE 7)
    if(header IN_LIST layer_${n})
      set(${out} ${n} PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out} -1 PARENT_SCOPE)
endfunction()

file(GLOB_RECURSE headers RELATIVE "${INCLUDE_DIR}" "${INCLUDE_DIR}/*.hpp" "${INCLUDE_DIR}/*.cuh")
set(problems "")
foreach(header IN LISTS headers)
  layer_of("${header}" own)
  if(own EQUAL -1)
    list(APPEND problems "${header} is in no layer: add it to tests/check_layers.cmake and docs/design.md")
    continue()
  endif()
  get_filename_component(folder "${header}" DIRECTORY)
  file(STRINGS "${INCLUDE_DIR}/${header}" lines REGEX "^#include \"")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "^#include \"([^\"]+)\".*" "\\1" included "${line}")
    if(folder)
      set(included "${folder}/${included}")
    endif()
    # ../x and a/../x to their path from include/easycache.
    string(REGEX REPLACE "[^/]+/\\.\\./" "" included "${included}")
    layer_of("${included}" theirs)
    if(theirs EQUAL -1)
      list(APPEND problems "${header} includes ${included}, which is in no layer")
    elseif(theirs GREATER own)
      list(APPEND problems "${header} (layer ${own}) includes ${included} (layer ${theirs})")
    endif()
  endforeach()
endforeach()
if(problems)
  string(REPLACE ";" "\n  " problems "${problems}")
  message(FATAL_ERROR "include layers broken:\n  ${problems}")
endif()
list(LENGTH headers count)
message(STATUS "include layers hold for the ${count} headers")
