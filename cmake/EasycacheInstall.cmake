# install(EXPORT) and a package config, so that find_package(easycache CONFIG)
# gives easycache::easycache, and easycache::eigen, easycache::torch and
# easycache::cuda when they were built and their dependency is found.
include(CMakePackageConfigHelpers)

set(EASYCACHE_CMAKE_DIR ${CMAKE_INSTALL_DATADIR}/cmake/easycache CACHE STRING
    "Where easycache's package config is installed")

install(DIRECTORY include/easycache DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS easycache EXPORT easycache-targets)
install(EXPORT easycache-targets NAMESPACE easycache:: DESTINATION ${EASYCACHE_CMAKE_DIR})
if(TARGET easycache_eigen)
  install(TARGETS easycache_eigen EXPORT easycache-eigen-targets)
  install(EXPORT easycache-eigen-targets NAMESPACE easycache:: DESTINATION ${EASYCACHE_CMAKE_DIR})
endif()
if(TARGET easycache_mpi)
  install(TARGETS easycache_mpi EXPORT easycache-mpi-targets)
  install(EXPORT easycache-mpi-targets NAMESPACE easycache:: DESTINATION ${EASYCACHE_CMAKE_DIR})
endif()

foreach(backend torch cuda)
  if(TARGET easycache_${backend})
    install(TARGETS easycache_${backend} EXPORT easycache-${backend}-targets)
    install(EXPORT easycache-${backend}-targets NAMESPACE easycache:: DESTINATION ${EASYCACHE_CMAKE_DIR})
  endif()
endforeach()

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/easycacheConfig.cmake.in
                              ${CMAKE_CURRENT_BINARY_DIR}/easycacheConfig.cmake
                              INSTALL_DESTINATION ${EASYCACHE_CMAKE_DIR})
# Header-only: any architecture may use it.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/easycacheConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/easycacheConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/easycacheConfigVersion.cmake
        DESTINATION ${EASYCACHE_CMAKE_DIR})
install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/easycache)
