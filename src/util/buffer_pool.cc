// BufferPool: see buffer_pool.h. Thread-safety: one mutex around the free lists; buffers
// are allocated and freed outside it.
#include "util/buffer_pool.h"

#include <bit>
#include <utility>

namespace vsfs {

size_t BufferPool::class_of(size_t size_bytes) {
  if (size_bytes <= kMinBytes) return 0;
  return static_cast<size_t>(std::bit_width((size_bytes - 1) / kMinBytes));
}

AlignedBuffer BufferPool::take(size_t size_bytes) {
  if (size_bytes > kMaxBytes) return AlignedBuffer(size_bytes);
  size_t c = class_of(size_bytes);
  {
    std::lock_guard lock(mu_);
    auto& list = free_[c];
    if (!list.empty()) {
      AlignedBuffer b = std::move(list.back());
      list.pop_back();
      free_bytes_ -= b.size();
      return b;
    }
  }
  // zero = true touches every page now, so later requests do not fault.
  return AlignedBuffer(kMinBytes << c, /*zero=*/true);
}

void BufferPool::give(AlignedBuffer buffer) {
  size_t size = buffer.size();
  if (size == 0 || size > kMaxBytes || (size & (size - 1)) != 0) return;  // not pooled
  {
    std::lock_guard lock(mu_);
    if (free_bytes_ + size <= retain_bytes_) {
      try {
        free_[class_of(size)].push_back(std::move(buffer));
        free_bytes_ += size;
        return;
      } catch (const std::bad_alloc&) {
        // The list could not grow: the buffer is freed below, the pool keeps less.
      }
    }
  }
  // Not retained: `buffer` is freed here, outside the lock.
}

size_t BufferPool::retained_bytes() const {
  std::lock_guard lock(mu_);
  return free_bytes_;
}

}  // namespace vsfs
