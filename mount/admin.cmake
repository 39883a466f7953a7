# The administration programs vsfs-mkfs, vsfs-fsck and vsfs-grow. Included from mount/CMakeLists.txt;
# paths are relative to this file so the fragment works from any including directory.
# What the programs share: the mount table and the daemons holding a device, waiting for
# a daemon that is still closing a datastore, umount(8)'s helper record, remount, the
# datastore's lease.
add_library(vsfs_programs STATIC ${CMAKE_CURRENT_LIST_DIR}/closing_daemon.cc
  ${CMAKE_CURRENT_LIST_DIR}/mounted.cc ${CMAKE_CURRENT_LIST_DIR}/leased.cc)
cmake_path(GET CMAKE_CURRENT_LIST_DIR PARENT_PATH vsfs_programs_repo_dir)
target_include_directories(vsfs_programs PUBLIC ${vsfs_programs_repo_dir}
  ${vsfs_programs_repo_dir}/include)
# libmount (util-linux): the utab entry that makes umount(8) run umount.vsfs.
pkg_check_modules(MOUNT REQUIRED IMPORTED_TARGET mount)
target_link_libraries(vsfs_programs PUBLIC vsfs_device vsfs_meta PRIVATE PkgConfig::MOUNT)
foreach(prog mkfs fsck grow)
  add_executable(vsfs-${prog} ${CMAKE_CURRENT_LIST_DIR}/vsfs_${prog}.cc)
  target_link_libraries(vsfs-${prog} PRIVATE vsfs_meta vsfs_programs)
  target_compile_definitions(vsfs-${prog} PRIVATE VSFS_VERSION="${PROJECT_VERSION}")
endforeach()
# vsfs-grow opens the datastore itself when it is not mounted.
target_link_libraries(vsfs-grow PRIVATE vsfs_disk)
# vsfs-mkfs asks libblkid what a device holds before it overwrites anything.
pkg_check_modules(BLKID REQUIRED IMPORTED_TARGET blkid)
target_link_libraries(vsfs-mkfs PRIVATE PkgConfig::BLKID)
install(TARGETS vsfs-mkfs vsfs-fsck vsfs-grow DESTINATION ${CMAKE_INSTALL_SBINDIR})
# mkfs(8) and fsck(8) run mkfs.TYPE and fsck.TYPE (mkfs -t vsfs, fstab's pass number).
# The prefix is read when installing: `cmake --install --prefix` may change it.
if(IS_ABSOLUTE ${CMAKE_INSTALL_SBINDIR})
  set(vsfs_sbin_at_install "${CMAKE_INSTALL_SBINDIR}")
else()
  set(vsfs_sbin_at_install "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SBINDIR}")
endif()
foreach(prog mkfs fsck)
  install(CODE "file(CREATE_LINK vsfs-${prog}
    \"\$ENV{DESTDIR}${vsfs_sbin_at_install}/${prog}.vsfs\" SYMBOLIC)")
endforeach()
