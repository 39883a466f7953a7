// VSFS_ASSERT: a broken invariant is a bug and stops the process, also in release
// builds. Use for cheap checks of internal state, never for input validation.
#pragma once

#include <cstdio>
#include <cstdlib>

#define VSFS_ASSERT(cond)                                                          \
  do {                                                                             \
    if (!(cond)) [[unlikely]] {                                                    \
      std::fprintf(stderr, "vsfs: invariant broken at %s:%d: %s\n", __FILE__,      \
                   __LINE__, #cond);                                               \
      std::abort();                                                                \
    }                                                                              \
  } while (0)
