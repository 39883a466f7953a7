# Mount configuration (config.cc), its unit tests and the mount(8) helper mount.vsfs.
# Included from mount/CMakeLists.txt; paths are relative to this file so the fragment
# works from any including directory.

cmake_path(GET CMAKE_CURRENT_LIST_DIR PARENT_PATH VSFS_CONFIG_REPO_DIR)

add_library(vsfs_config STATIC ${CMAKE_CURRENT_LIST_DIR}/config.cc)
# Programs include "mount/config.h" from the repository root.
target_include_directories(vsfs_config PUBLIC ${VSFS_CONFIG_REPO_DIR})
target_link_libraries(vsfs_config PUBLIC vsfs_util PkgConfig::TOMLPP)
target_compile_features(vsfs_config PUBLIC cxx_std_20)

# mount(8) runs /sbin/mount.TYPE; with a prefix other than /usr, link it there (see
# vsfs-mount(8)). The helper finds vsfs-mount next to itself, in ../bin, or in PATH.
install(PROGRAMS ${CMAKE_CURRENT_LIST_DIR}/mount.vsfs DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(FILES ${VSFS_CONFIG_REPO_DIR}/examples/vsfs.toml
  DESTINATION ${CMAKE_INSTALL_DATADIR}/vsfs/examples)
install(PROGRAMS ${VSFS_CONFIG_REPO_DIR}/examples/quickstart.sh
  DESTINATION ${CMAKE_INSTALL_DATADIR}/vsfs/examples)

if(VSFS_TESTS)
  # The top level may add this directory before its own enable_testing(); without this
  # call the tests below would be dropped.
  enable_testing()
  find_package(GTest REQUIRED)
  include(GoogleTest)
  add_executable(vsfs_unit_mount_config
    ${VSFS_CONFIG_REPO_DIR}/tests/unit/mount/config_test.cc)
  target_compile_definitions(vsfs_unit_mount_config PRIVATE
    VSFS_EXAMPLE_CONFIG="${VSFS_CONFIG_REPO_DIR}/examples/vsfs.toml")
  target_link_libraries(vsfs_unit_mount_config PRIVATE vsfs_config GTest::gtest_main)
  gtest_discover_tests(vsfs_unit_mount_config DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)

  add_test(NAME mount_vsfs_helper_args
    COMMAND sh ${VSFS_CONFIG_REPO_DIR}/tests/unit/mount/mount_vsfs_test.sh
               ${CMAKE_CURRENT_LIST_DIR}/mount.vsfs)
  set_tests_properties(mount_vsfs_helper_args PROPERTIES TIMEOUT 60)
endif()
