# vsfs-clone, a user's program: clones a file within a mounted datastore with
# copy_file_range (vsfs-clone(1)). Included from mount/CMakeLists.txt. It works only
# through the mount; from the library it takes human_bytes (vsfs_util, header only).
add_executable(vsfs-clone ${CMAKE_CURRENT_LIST_DIR}/vsfs_clone.cc)
target_link_libraries(vsfs-clone PRIVATE vsfs_util)
target_compile_definitions(vsfs-clone PRIVATE VSFS_VERSION="${PROJECT_VERSION}")
# In bin/: users run it on their own disks (an allow_other mount); the administrator's
# programs are in sbin/.
install(TARGETS vsfs-clone DESTINATION ${CMAKE_INSTALL_BINDIR})
