# vsfs-mkfs and vsfs-fsck on files and a loop device (the loop part is skipped, with a
# message, where losetup cannot attach one). Included from tests/integration/.
add_test(NAME admin_programs
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/admin_test.sh
          $<TARGET_FILE:vsfs-mkfs> $<TARGET_FILE:vsfs-fsck>)
set_tests_properties(admin_programs PROPERTIES TIMEOUT 300)

# The installed layout (tests/integration/install_test.sh): a private prefix.
add_test(NAME install_layout
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/install_test.sh ${CMAKE_BINARY_DIR})
set_tests_properties(install_layout PROPERTIES TIMEOUT 120)

# vsfs-mkfs's refusals of what libblkid finds (tests/integration/mkfs_probe_test.sh).
add_test(NAME mkfs_probes
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/mkfs_probe_test.sh
          $<TARGET_FILE:vsfs-mkfs> $<TARGET_FILE:vsfs-fsck>)
set_tests_properties(mkfs_probes PROPERTIES TIMEOUT 300)
