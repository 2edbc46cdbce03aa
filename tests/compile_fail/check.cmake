# Builds one must-not-compile target and checks that the build fails with the
# expected message and with that one error only.
#   cmake -DBUILD_DIR=... -DTARGET=... -DEXPECTED=... -P check.cmake
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
                RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output)
if(result EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but must not")
endif()
string(FIND "${output}" "${EXPECTED}" found)
if(found EQUAL -1)
  message(FATAL_ERROR "${TARGET}: the build failed without the expected message '${EXPECTED}':\n${output}")
endif()
string(REGEX MATCHALL "error:" errors "${output}")
list(LENGTH errors error_count)
if(NOT error_count EQUAL 1)
  message(FATAL_ERROR "${TARGET}: expected exactly one compiler error, got ${error_count}:\n${output}")
endif()
message(STATUS "${TARGET}: fails to compile with one error: ${EXPECTED}")
