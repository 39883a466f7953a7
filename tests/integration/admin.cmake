# vsfs-mkfs and vsfs-fsck on files and a loop device (the loop part is skipped, with a
# message, where losetup cannot attach one). Included from tests/integration/.
add_test(NAME admin_programs
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/admin_test.sh
          $<TARGET_FILE:vsfs-mkfs> $<TARGET_FILE:vsfs-fsck>)
set_tests_properties(admin_programs PROPERTIES TIMEOUT 300)
