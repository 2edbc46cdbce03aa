# Builds one must-not-compile target and checks that the build fails with the
# expected messages (a list: each must appear) and with that many errors
# (ERRORS, default 1: one diagnostic per problem, nothing else).
#   cmake -DBUILD_DIR=... -DTARGET=... -DEXPECTED=... [-DERRORS=n] -P check.cmake
if(NOT DEFINED ERRORS OR ERRORS STREQUAL "")
  set(ERRORS 1)
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
                RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(result EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but must not")
endif()
foreach(expected IN LISTS EXPECTED)
  string(FIND "${output}" "${expected}" found)
  if(found EQUAL -1)
    message(FATAL_ERROR "${TARGET}: the build failed without the expected message '${expected}':\n${output}")
  endif()
endforeach()
string(REGEX MATCHALL "error:" errors "${output}")
list(LENGTH errors error_count)
if(NOT error_count EQUAL ERRORS)
  message(FATAL_ERROR "${TARGET}: expected exactly ${ERRORS} compiler errors, got ${error_count}:\n${output}")
endif()
message(STATUS "${TARGET}: fails to compile with ${ERRORS} error(s): ${EXPECTED}")
