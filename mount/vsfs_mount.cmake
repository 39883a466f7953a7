# vsfs-mount: the FUSE daemon (vsfs_mount.cc). Included from mount/CMakeLists.txt after
# config.cmake (needs vsfs_config) and after src/fuse (vsfs_fuse).
add_executable(vsfs-mount ${CMAKE_CURRENT_LIST_DIR}/vsfs_mount.cc)
# libsystemd: sd_notify for Type=notify services.
pkg_check_modules(SYSTEMD REQUIRED IMPORTED_TARGET libsystemd)
target_link_libraries(vsfs-mount PRIVATE vsfs_fuse vsfs_config vsfs_programs PkgConfig::SYSTEMD)
target_compile_definitions(vsfs-mount PRIVATE VSFS_VERSION="${PROJECT_VERSION}")
install(TARGETS vsfs-mount RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})

# The systemd unit template vsfs@.service, written when installing so that it names
# vsfs-mount under the prefix being installed to (cmake --install --prefix may change it).
if(IS_ABSOLUTE ${CMAKE_INSTALL_SBINDIR})
  set(vsfs_unit_sbin "${CMAKE_INSTALL_SBINDIR}")
else()
  set(vsfs_unit_sbin "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SBINDIR}")
endif()
install(CODE "
  set(VSFS_SBINDIR \"${vsfs_unit_sbin}\")
  configure_file(\"${CMAKE_CURRENT_LIST_DIR}/vsfs@.service.in\"
    \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system/vsfs@.service\" @ONLY)
  message(STATUS \"Installing: \$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system/vsfs@.service\")")
