# The administration programs vsfs-mkfs and vsfs-fsck. Included from mount/CMakeLists.txt;
# paths are relative to this file so the fragment works from any including directory.
foreach(prog mkfs fsck)
  add_executable(vsfs-${prog} ${CMAKE_CURRENT_LIST_DIR}/vsfs_${prog}.cc)
  target_link_libraries(vsfs-${prog} PRIVATE vsfs_meta)
  target_compile_definitions(vsfs-${prog} PRIVATE VSFS_VERSION="${PROJECT_VERSION}")
endforeach()
install(TARGETS vsfs-mkfs vsfs-fsck DESTINATION ${CMAKE_INSTALL_SBINDIR})
