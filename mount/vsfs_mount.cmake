# vsfs-mount: the FUSE daemon (vsfs_mount.cc). Included from mount/CMakeLists.txt after
# config.cmake (needs vsfs_config) and after src/fuse (vsfs_fuse).
add_executable(vsfs-mount ${CMAKE_CURRENT_LIST_DIR}/vsfs_mount.cc)
target_link_libraries(vsfs-mount PRIVATE vsfs_fuse vsfs_config)
install(TARGETS vsfs-mount RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
