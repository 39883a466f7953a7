// DataOp and its tools: IoPlan joins contiguous grains into runs, split_at_grains cuts a
// byte range at grains, Join answers once with the first error, grain_direct tells when
// buffers can be used in place, submit_plan runs a plan on a SimDevice, and a DataOp
// counts itself live and gives its buffer back to its pool.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "device/sim_device.h"
#include "disk/data_op.h"
#include "util/aligned_buffer.h"
#include "util/buffer_pool.h"
#include "util/units.h"

namespace vsfs::disk {
namespace {

using device::OpKind;

// ---- IoPlan ----

TEST(DataOpPlan, ContiguousGrainsOfOneKindJoinAndAdjacentBuffersMerge) {
  AlignedBuffer buf(4 * kGrainBytes);
  IoPlan plan;
  for (uint64_t i = 0; i < 4; ++i) plan.add(OpKind::kWrite, 100 + i, buf.data() + i * kGrainBytes);
  ASSERT_EQ(plan.runs.size(), 1u);
  EXPECT_EQ(plan.runs[0].kind, OpKind::kWrite);
  EXPECT_EQ(plan.runs[0].grain, 100u);
  EXPECT_EQ(plan.runs[0].count, 4u);
  ASSERT_EQ(plan.runs[0].iov.size(), 1u);
  EXPECT_EQ(plan.runs[0].iov[0].iov_base, buf.data());
  EXPECT_EQ(plan.runs[0].iov[0].iov_len, 4 * kGrainBytes);
}

TEST(DataOpPlan, NonAdjacentBuffersKeepTheirOwnIovecs) {
  AlignedBuffer a(2 * kGrainBytes), b(kGrainBytes);
  IoPlan plan;
  plan.add(OpKind::kRead, 7, a.data());
  plan.add(OpKind::kRead, 8, b.data());                 // another buffer
  plan.add(OpKind::kRead, 9, a.data() + kGrainBytes);   // not after b: new iovec
  ASSERT_EQ(plan.runs.size(), 1u);
  EXPECT_EQ(plan.runs[0].grain, 7u);
  EXPECT_EQ(plan.runs[0].count, 3u);
  ASSERT_EQ(plan.runs[0].iov.size(), 3u);
  EXPECT_EQ(plan.runs[0].iov[0].iov_base, a.data());
  EXPECT_EQ(plan.runs[0].iov[1].iov_base, b.data());
  EXPECT_EQ(plan.runs[0].iov[2].iov_base, a.data() + kGrainBytes);
  for (const iovec& v : plan.runs[0].iov) EXPECT_EQ(v.iov_len, kGrainBytes);
}

TEST(DataOpPlan, GapOrKindChangeStartsANewRun) {
  AlignedBuffer buf(4 * kGrainBytes);
  uint8_t* p = buf.data();
  IoPlan plan;
  plan.add(OpKind::kWrite, 10, p);
  plan.add(OpKind::kWrite, 12, p + kGrainBytes);      // gap at 11
  plan.add(OpKind::kRead, 13, p + 2 * kGrainBytes);   // contiguous, other kind
  plan.add(OpKind::kRead, 14, p + 3 * kGrainBytes);   // joins the read
  ASSERT_EQ(plan.runs.size(), 3u);
  EXPECT_EQ(plan.runs[0].grain, 10u);
  EXPECT_EQ(plan.runs[0].count, 1u);
  EXPECT_EQ(plan.runs[1].kind, OpKind::kWrite);
  EXPECT_EQ(plan.runs[1].grain, 12u);
  EXPECT_EQ(plan.runs[1].count, 1u);
  ASSERT_EQ(plan.runs[1].iov.size(), 1u);
  EXPECT_EQ(plan.runs[1].iov[0].iov_base, p + kGrainBytes);
  EXPECT_EQ(plan.runs[2].kind, OpKind::kRead);
  EXPECT_EQ(plan.runs[2].grain, 13u);
  EXPECT_EQ(plan.runs[2].count, 2u);
  ASSERT_EQ(plan.runs[2].iov.size(), 1u);
  EXPECT_EQ(plan.runs[2].iov[0].iov_len, 2 * kGrainBytes);
  // A grain before the run's end (going backwards) does not join either.
  plan.add(OpKind::kRead, 12, p);
  EXPECT_EQ(plan.runs.size(), 4u);
}

// ---- split_at_grains ----

TEST(DataOpSplit, InsideOneGrain) {
  auto g = split_at_grains(2 * kGrainBytes + 100, 2 * kGrainBytes + 300);
  EXPECT_EQ(g.whole_first, g.whole_end);  // no whole grain
  ASSERT_EQ(g.edges.size(), 1u);
  EXPECT_EQ(g.edges[0].first, 2 * kGrainBytes + 100);
  EXPECT_EQ(g.edges[0].second, 200u);
}

TEST(DataOpSplit, AlignedWholeGrains) {
  auto g = split_at_grains(3 * kGrainBytes, 7 * kGrainBytes);
  EXPECT_EQ(g.whole_first, 3u);
  EXPECT_EQ(g.whole_end, 7u);
  EXPECT_TRUE(g.edges.empty());
}

TEST(DataOpSplit, BothEdgesPartial) {
  auto g = split_at_grains(kGrainBytes + 10, 4 * kGrainBytes + 20);
  EXPECT_EQ(g.whole_first, 2u);
  EXPECT_EQ(g.whole_end, 4u);
  ASSERT_EQ(g.edges.size(), 2u);
  EXPECT_EQ(g.edges[0], std::make_pair(kGrainBytes + 10, kGrainBytes - 10));
  EXPECT_EQ(g.edges[1], std::make_pair(4 * kGrainBytes, uint64_t{20}));
}

TEST(DataOpSplit, OneEdgePartial) {
  auto head = split_at_grains(kGrainBytes + 10, 3 * kGrainBytes);
  EXPECT_EQ(head.whole_first, 2u);
  EXPECT_EQ(head.whole_end, 3u);
  ASSERT_EQ(head.edges.size(), 1u);
  EXPECT_EQ(head.edges[0], std::make_pair(kGrainBytes + 10, kGrainBytes - 10));

  auto tail = split_at_grains(kGrainBytes, 3 * kGrainBytes + 5);
  EXPECT_EQ(tail.whole_first, 1u);
  EXPECT_EQ(tail.whole_end, 3u);
  ASSERT_EQ(tail.edges.size(), 1u);
  EXPECT_EQ(tail.edges[0], std::make_pair(3 * kGrainBytes, uint64_t{5}));

  // A partial grain next to a partial grain, no whole one between: two edges.
  auto two = split_at_grains(kGrainBytes + 1, 2 * kGrainBytes + 1);
  EXPECT_EQ(two.whole_first, two.whole_end);
  ASSERT_EQ(two.edges.size(), 2u);
  EXPECT_EQ(two.edges[0], std::make_pair(kGrainBytes + 1, kGrainBytes - 1));
  EXPECT_EQ(two.edges[1], std::make_pair(2 * kGrainBytes, uint64_t{1}));
}

// ---- Join ----

TEST(DataOpJoin, DoneOnceAfterTheLastPartWithTheFirstError) {
  int calls = 0;
  Result<void> got = ok_result();
  Join join(3, [&](Result<void> r) {
    ++calls;
    got = std::move(r);
  });
  join.part(ok_result());
  EXPECT_EQ(calls, 0);
  join.part(make_error(ENOSPC, ErrorKind::kNoSpace, "first"));
  EXPECT_EQ(calls, 0);
  join.part(make_error(EIO, ErrorKind::kIo, "second"));
  ASSERT_EQ(calls, 1);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().errno_value, ENOSPC);
  EXPECT_EQ(got.error().message, "first");
}

TEST(DataOpJoin, AllOkAnswersOk) {
  int calls = 0;
  bool ok = false;
  Join join(2, [&](Result<void> r) {
    ++calls;
    ok = r.ok();
  });
  join.part(ok_result());
  join.part(ok_result());
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(ok);
}

// ---- grain_direct ----

TEST(DataOpGrainDirect, WholeAlignedGrainsAreDirect) {
  AlignedBuffer a(2 * kGrainBytes), b(kGrainBytes);
  iovec iov[2] = {{a.data(), 2 * kGrainBytes}, {b.data(), kGrainBytes}};
  EXPECT_TRUE(grain_direct(kGrainBytes, 3 * kGrainBytes, iov, 2));
}

TEST(DataOpGrainDirect, AnythingUnalignedIsNot) {
  AlignedBuffer a(3 * kGrainBytes);
  iovec whole{a.data(), 2 * kGrainBytes};
  EXPECT_FALSE(grain_direct(512, 2 * kGrainBytes, &whole, 1));          // offset
  EXPECT_FALSE(grain_direct(0, 2 * kGrainBytes - 512, &whole, 1));      // length
  iovec shifted{a.data() + 512, 2 * kGrainBytes};
  EXPECT_FALSE(grain_direct(0, 2 * kGrainBytes, &shifted, 1));          // address
  iovec parts[2] = {{a.data(), kGrainBytes + 512}, {a.data() + 2 * kGrainBytes, kGrainBytes - 512}};
  EXPECT_FALSE(grain_direct(0, 2 * kGrainBytes, parts, 2));             // buffer length
}

// ---- DataOp lifetime ----

TEST(DataOpLife, CountsItselfLiveAndGivesItsBufferBack) {
  std::atomic<uint64_t> live{0};
  BufferPool pool(1 << 20);
  {
    auto a = std::make_shared<DataOp>(live);
    EXPECT_EQ(live.load(), 1u);
    {
      DataOp b(live);
      EXPECT_EQ(live.load(), 2u);
    }
    EXPECT_EQ(live.load(), 1u);
    a->pool = &pool;
    a->buf = pool.take(2 * kGrainBytes);
    EXPECT_EQ(pool.retained_bytes(), 0u);
  }
  EXPECT_EQ(live.load(), 0u);
  EXPECT_EQ(pool.retained_bytes(), 2 * kGrainBytes);
}

// ---- submit_plan ----

std::unique_ptr<device::SimDevice> manual_device() {
  device::SimOptions o;
  o.size_bytes = 16ull << 20;
  o.manual_completions = true;  // IOs complete in run_pending(), on this thread
  return std::make_unique<device::SimDevice>(o);
}

TEST(DataOpSubmit, EmptyPlanCompletesAtOnce) {
  auto dev = manual_device();
  std::atomic<uint64_t> live{0};
  auto op = std::make_shared<DataOp>(live);
  int calls = 0;
  submit_plan(*dev, op, [&] { ++calls; });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(op->error.load(), 0);
  EXPECT_EQ(dev->io_count(), 0u);
}

TEST(DataOpSubmit, TwoRunsWriteThenReadBack) {
  auto dev = manual_device();
  std::atomic<uint64_t> live{0};
  AlignedBuffer data(3 * kGrainBytes);
  for (size_t i = 0; i < data.size(); ++i) data.data()[i] = static_cast<uint8_t>(i * 7 + 3);

  auto w = std::make_shared<DataOp>(live);
  w->plan.add(OpKind::kWrite, 20, data.data());
  w->plan.add(OpKind::kWrite, 21, data.data() + kGrainBytes);
  w->plan.add(OpKind::kWrite, 40, data.data() + 2 * kGrainBytes);
  ASSERT_EQ(w->plan.runs.size(), 2u);
  int wcalls = 0;
  submit_plan(*dev, w, [&] { ++wcalls; });
  EXPECT_EQ(wcalls, 0);  // not before the IOs complete
  EXPECT_EQ(dev->run_pending(), 2u);
  EXPECT_EQ(wcalls, 1);
  EXPECT_EQ(w->error.load(), 0);

  AlignedBuffer back(3 * kGrainBytes);
  auto r = std::make_shared<DataOp>(live);
  r->plan.add(OpKind::kRead, 20, back.data());
  r->plan.add(OpKind::kRead, 21, back.data() + kGrainBytes);
  r->plan.add(OpKind::kRead, 40, back.data() + 2 * kGrainBytes);
  int rcalls = 0;
  submit_plan(*dev, r, [&] { ++rcalls; });
  dev->run_pending();
  EXPECT_EQ(rcalls, 1);
  EXPECT_EQ(r->error.load(), 0);
  EXPECT_EQ(std::memcmp(back.data(), data.data(), data.size()), 0);
  // Where the second run went on the device.
  std::vector<uint8_t> at40(kGrainBytes);
  dev->peek(40 * kGrainBytes, at40.data(), kGrainBytes);
  EXPECT_EQ(std::memcmp(at40.data(), data.data() + 2 * kGrainBytes, kGrainBytes), 0);
}

TEST(DataOpSubmit, FailedIoSetsErrorAndCompletesOnce) {
  auto dev = manual_device();
  std::atomic<uint64_t> live{0};
  AlignedBuffer data(2 * kGrainBytes);
  auto op = std::make_shared<DataOp>(live);
  op->plan.add(OpKind::kWrite, 5, data.data());
  op->plan.add(OpKind::kWrite, 9, data.data() + kGrainBytes);
  ASSERT_EQ(op->plan.runs.size(), 2u);
  dev->fail_nth(OpKind::kWrite, 1);
  int calls = 0;
  int64_t error_at_complete = 0;
  submit_plan(*dev, op, [&] {
    ++calls;
    error_at_complete = op->error.load();
  });
  EXPECT_EQ(dev->run_pending(), 2u);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(error_at_complete, -EIO);
  EXPECT_EQ(op->error.load(), -EIO);
  EXPECT_EQ(op->outstanding.load(), 0u);
}

TEST(DataOpSubmit, CompletesOnTheDeviceThread) {
  // Declared before the device: its thread may drop the op (and so touch `live`) until
  // the device is destroyed.
  std::atomic<uint64_t> live{0};
  AlignedBuffer data(4 * kGrainBytes);
  std::memset(data.data(), 0x5a, data.size());
  std::promise<int64_t> done;
  std::atomic<int> calls{0};
  device::SimOptions o;
  o.size_bytes = 16ull << 20;
  o.reorder_completions = true;
  o.max_latency_us = 200;
  device::SimDevice dev(o);
  {
    auto op = std::make_shared<DataOp>(live);
    for (uint64_t i = 0; i < 4; ++i) op->plan.add(OpKind::kWrite, 2 * i + 1, data.data() + i * kGrainBytes);
    ASSERT_EQ(op->plan.runs.size(), 4u);
    submit_plan(dev, op, [&, raw = op.get()] {
      if (calls.fetch_add(1) == 0) done.set_value(raw->error.load());
    });
  }
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(f.get(), 0);
  EXPECT_EQ(calls.load(), 1);
  std::vector<uint8_t> g(kGrainBytes);
  dev.peek(7 * kGrainBytes, g.data(), kGrainBytes);
  EXPECT_EQ(g[0], 0x5a);
  EXPECT_EQ(g[kGrainBytes - 1], 0x5a);
}

}  // namespace
}  // namespace vsfs::disk
