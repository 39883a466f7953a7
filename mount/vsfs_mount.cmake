# vsfs-mount: the FUSE daemon (vsfs_mount.cc). Included from mount/CMakeLists.txt after
# config.cmake (needs vsfs_config) and after src/fuse (vsfs_fuse).
add_executable(vsfs-mount ${CMAKE_CURRENT_LIST_DIR}/vsfs_mount.cc)
# libsystemd: sd_notify for Type=notify services.
pkg_check_modules(SYSTEMD REQUIRED IMPORTED_TARGET libsystemd)
target_link_libraries(vsfs-mount PRIVATE vsfs_fuse vsfs_config vsfs_programs PkgConfig::SYSTEMD)
target_compile_definitions(vsfs-mount PRIVATE VSFS_VERSION="${PROJECT_VERSION}")
install(TARGETS vsfs-mount RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})

# umount.vsfs: umount(8)'s helper (vsfs-mount records helper=vsfs in utab); it waits for
# the daemon to close the datastore. mount.fuse.vsfs: the name mount(8) looks for on a
# remount (the kernel's type is fuse.vsfs), the same helper as mount.vsfs.
add_executable(umount.vsfs ${CMAKE_CURRENT_LIST_DIR}/umount_vsfs.cc)
target_link_libraries(umount.vsfs PRIVATE vsfs_programs)
install(TARGETS umount.vsfs RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
# (vsfs_sbin_at_install: admin.cmake) In the build tree too both names sit beside
# vsfs-mount, so that a test can point /sbin's names at this build.
configure_file(${CMAKE_CURRENT_LIST_DIR}/mount.vsfs ${CMAKE_RUNTIME_OUTPUT_DIRECTORY}/mount.vsfs
  COPYONLY)
file(CREATE_LINK mount.vsfs ${CMAKE_RUNTIME_OUTPUT_DIRECTORY}/mount.fuse.vsfs SYMBOLIC)
install(CODE "file(CREATE_LINK mount.vsfs
  \"\$ENV{DESTDIR}${vsfs_sbin_at_install}/mount.fuse.vsfs\" SYMBOLIC)")

# The systemd unit template vsfs@.service, written when installing so that it names
# vsfs-mount under the prefix being installed to (cmake --install --prefix may change it).
install(CODE "
  set(VSFS_SBINDIR \"${vsfs_sbin_at_install}\")
  configure_file(\"${CMAKE_CURRENT_LIST_DIR}/vsfs@.service.in\"
    \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system/vsfs@.service\" @ONLY)
  message(STATUS \"Installing: \$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system/vsfs@.service\")")
