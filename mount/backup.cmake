# The backup programs vsfs-backup and vsfs-restore. Included from mount/CMakeLists.txt.
# They work only through a mounted datastore (snapshots, .cbt maps, files), never on the
# device; from the library they take crc32c and Result (vsfs_util).
add_library(vsfs_backup_chain STATIC ${CMAKE_CURRENT_LIST_DIR}/backup_chain.cc)
cmake_path(GET CMAKE_CURRENT_LIST_DIR PARENT_PATH vsfs_backup_repo_dir)
target_include_directories(vsfs_backup_chain PUBLIC ${vsfs_backup_repo_dir})
target_link_libraries(vsfs_backup_chain PUBLIC vsfs_util)
foreach(prog backup restore)
  add_executable(vsfs-${prog} ${CMAKE_CURRENT_LIST_DIR}/vsfs_${prog}.cc)
  target_link_libraries(vsfs-${prog} PRIVATE vsfs_backup_chain)
  target_compile_definitions(vsfs-${prog} PRIVATE VSFS_VERSION="${PROJECT_VERSION}")
endforeach()
install(TARGETS vsfs-backup vsfs-restore DESTINATION ${CMAKE_INSTALL_SBINDIR})

if(VSFS_TESTS)
  add_executable(vsfs_unit_mount_backup_chain
    ${vsfs_backup_repo_dir}/tests/unit/mount/backup_chain_test.cc)
  target_link_libraries(vsfs_unit_mount_backup_chain PRIVATE vsfs_backup_chain GTest::gtest_main)
  gtest_discover_tests(vsfs_unit_mount_backup_chain DISCOVERY_TIMEOUT 60 PROPERTIES TIMEOUT 120)
endif()
