// BufferPool: size classes, reuse, the bound on retained buffers, oversize buffers.
#include "util/buffer_pool.h"

#include <gtest/gtest.h>

namespace vsfs {
namespace {

TEST(BufferPool, TakesTheSizeClassAndReusesWhatWasGiven) {
  BufferPool pool(1u << 20);
  AlignedBuffer a = pool.take(5000);
  EXPECT_EQ(a.size(), 8192u);  // the next power of two from 4 KiB
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % AlignedBuffer::kAlign, 0u);
  uint8_t* p = a.data();
  pool.give(std::move(a));
  EXPECT_EQ(pool.retained_bytes(), 8192u);
  AlignedBuffer b = pool.take(8192);
  EXPECT_EQ(b.data(), p) << "a free buffer of the class is reused";
  EXPECT_EQ(pool.retained_bytes(), 0u);
  AlignedBuffer c = pool.take(1);
  EXPECT_EQ(c.size(), 4096u);
}

TEST(BufferPool, RetainsAtMostItsBound) {
  BufferPool pool(3u << 20);
  std::vector<AlignedBuffer> bufs;
  for (int i = 0; i < 5; ++i) bufs.push_back(pool.take(1u << 20));
  for (auto& b : bufs) pool.give(std::move(b));
  EXPECT_EQ(pool.retained_bytes(), 3u << 20) << "the rest was freed";
}

TEST(BufferPool, LargerThanTheLargestClassIsNotPooled) {
  BufferPool pool(64u << 20);
  AlignedBuffer big = pool.take((1u << 20) + 1);
  EXPECT_EQ(big.size(), (1u << 20) + 1);
  pool.give(std::move(big));
  EXPECT_EQ(pool.retained_bytes(), 0u);
  pool.give(AlignedBuffer(12288));  // not a class size: freed, not kept
  EXPECT_EQ(pool.retained_bytes(), 0u);
}

}  // namespace
}  // namespace vsfs
