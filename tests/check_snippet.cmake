# Checks that a documentation page holds, verbatim, the code a test compiles:
# the lines of SOURCE between two `// [MARKER]` lines must appear in DOC.
#   cmake -DDOC=page.md -DSOURCE=test.cpp -DMARKER=name -P check_snippet.cmake
file(READ "${SOURCE}" source_text)
set(marker "// [${MARKER}]\n")
string(FIND "${source_text}" "${marker}" first)
if(first EQUAL -1)
  message(FATAL_ERROR "${SOURCE}: no '// [${MARKER}]' marker")
endif()
string(LENGTH "${marker}" marker_length)
math(EXPR begin "${first} + ${marker_length}")
string(SUBSTRING "${source_text}" ${begin} -1 rest)
string(FIND "${rest}" "${marker}" length)
if(length EQUAL -1)
  message(FATAL_ERROR "${SOURCE}: the '// [${MARKER}]' region is not closed")
endif()
string(SUBSTRING "${rest}" 0 ${length} snippet)
file(READ "${DOC}" doc_text)
string(FIND "${doc_text}" "${snippet}" found)
if(found EQUAL -1)
  message(FATAL_ERROR "${DOC} does not hold the code of ${SOURCE}'s [${MARKER}] region as it stands; "
                      "copy it there again:\n${snippet}")
endif()
message(STATUS "${DOC} holds ${SOURCE}'s [${MARKER}] region")
