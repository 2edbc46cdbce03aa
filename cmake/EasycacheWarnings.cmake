# Warning and sanitizer flags for easycache's own targets (tests, examples,
# benchmarks); never applied to consumers of the library.
set(EASYCACHE_TEST_CXX_STANDARD 17 CACHE STRING "C++ standard of easycache's own targets (17 or 20)")

function(easycache_target_options target)
  set_target_properties(${target} PROPERTIES CXX_STANDARD ${EASYCACHE_TEST_CXX_STANDARD} CXX_STANDARD_REQUIRED ON
                                             CXX_EXTENSIONS OFF)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    set(warnings -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wold-style-cast
                 -Wnon-virtual-dtor)
    if(EASYCACHE_WERROR)
      list(APPEND warnings -Werror)
    endif()
    # nvcc passes host-compiler flags on with -Xcompiler; its generated code is
    # not -Wpedantic / -Wold-style-cast clean, so those stay C++-only.
    set(cuda_host_warnings ${warnings})
    list(REMOVE_ITEM cuda_host_warnings -Wpedantic -Wold-style-cast)
    list(JOIN cuda_host_warnings "," cuda_host_warnings)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:${warnings}>"
                                             "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${cuda_host_warnings}>")
    if(EASYCACHE_SANITIZE)
      target_compile_options(${target} PRIVATE -fsanitize=${EASYCACHE_SANITIZE} -fno-omit-frame-pointer
                                               -fno-sanitize-recover=all)
      target_link_options(${target} PRIVATE -fsanitize=${EASYCACHE_SANITIZE})
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${EASYCACHE_WERROR}>:/WX>)
  endif()
endfunction()

# The same for targets with CUDA sources (nvcc): the host compiler's warnings
# through -Xcompiler, nvcc's own as errors too, and the GPU architectures.
function(easycache_cuda_target_options target)
  easycache_target_options(${target})
  set_target_properties(${target} PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON CUDA_EXTENSIONS OFF
                                             CUDA_ARCHITECTURES "${EASYCACHE_CUDA_ARCHITECTURES}")
  if(EASYCACHE_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>)
  endif()
endfunction()

# The demo model's forward pass is compute-heavy: optimize it even in Debug
# (sanitizer) builds, so that those builds stay fast enough to run it.
function(easycache_optimize_model_code target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE $<$<CONFIG:Debug>:-O2>)
  endif()
endfunction()
