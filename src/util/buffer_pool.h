// BufferPool: aligned, pre-faulted data buffers reused across requests (FUSE read
// replies, the datastore's write and bounce buffers).
//
// A request takes a buffer of its size class (4 KiB .. 1 MiB, powers of two; it may be
// larger than asked and holds old data) and gives it back when done. Buffers are never
// mapped per request: a new one is allocated (and faulted in) only when its class has
// none free, and the pool keeps at most `retain_bytes` of free buffers, freeing the
// rest, so memory stays bounded by what is in flight plus that bound. Freeing and
// allocating 1 MiB buffers per request instead left the heap holding ~145 MB it could
// not give back after a 60 GiB fill.
// Thread-safety: take() and give() may be called from any thread (one mutex).
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <vector>

#include "util/aligned_buffer.h"

namespace vsfs {

class BufferPool {
 public:
  static constexpr size_t kMinBytes = 4096;
  static constexpr size_t kClasses = 9;  // 4 KiB << 0 .. 4 KiB << 8 = 1 MiB
  static constexpr size_t kMaxBytes = kMinBytes << (kClasses - 1);

  explicit BufferPool(size_t retain_bytes) : retain_bytes_(retain_bytes) {}
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of at least `size_bytes`. Larger than kMaxBytes: an exact one, not pooled.
  // Throws std::bad_alloc when memory is exhausted.
  AlignedBuffer take(size_t size_bytes);
  void give(AlignedBuffer buffer);

  size_t retained_bytes() const;

 private:
  static size_t class_of(size_t size_bytes);

  const size_t retain_bytes_;
  mutable std::mutex mu_;
  std::array<std::vector<AlignedBuffer>, kClasses> free_;  // guarded by mu_
  size_t free_bytes_ = 0;                                   // guarded by mu_
};

}  // namespace vsfs
