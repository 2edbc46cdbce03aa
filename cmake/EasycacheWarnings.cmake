# Warning and sanitizer flags for easycache's own targets (tests, examples,
# benchmarks); never applied to consumers of the library.
set(EASYCACHE_TEST_CXX_STANDARD 17 CACHE STRING "C++ standard of easycache's own targets (17 or 20)")

function(easycache_target_options target)
  set_target_properties(${target} PROPERTIES CXX_STANDARD ${EASYCACHE_TEST_CXX_STANDARD} CXX_STANDARD_REQUIRED ON
                                             CXX_EXTENSIONS OFF)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion
                                             -Wold-style-cast -Wnon-virtual-dtor)
    if(EASYCACHE_WERROR)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
    if(EASYCACHE_SANITIZE)
      target_compile_options(${target} PRIVATE -fsanitize=${EASYCACHE_SANITIZE} -fno-omit-frame-pointer
                                               -fno-sanitize-recover=all)
      target_link_options(${target} PRIVATE -fsanitize=${EASYCACHE_SANITIZE})
    endif()
  elseif(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${EASYCACHE_WERROR}>:/WX>)
  endif()
endfunction()

# The demo model's forward pass is compute-heavy: optimize it even in Debug
# (sanitizer) builds, so that those builds stay fast enough to run it.
function(easycache_optimize_model_code target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE $<$<CONFIG:Debug>:-O2>)
  endif()
endfunction()
