#include "disk/data_op.h"

namespace vsfs::disk {

void IoPlan::add(device::OpKind kind, uint64_t grain, uint8_t* buf) {
  if (!runs.empty()) {
    Run& r = runs.back();
    if (r.kind == kind && r.grain + r.count == grain && r.iov.size() < IOV_MAX / 2) {
      if (static_cast<uint8_t*>(r.iov.back().iov_base) + r.iov.back().iov_len == buf) {
        r.iov.back().iov_len += kGrainBytes;
      } else {
        r.iov.push_back(iovec{buf, kGrainBytes});
      }
      ++r.count;
      return;
    }
  }
  runs.push_back(Run{kind, grain, 1, {iovec{buf, kGrainBytes}}});
}

void submit_plan(device::Device& dev, const std::shared_ptr<DataOp>& op,
                 std::function<void()> complete) {
  auto& runs = op->plan.runs;
  if (runs.empty()) {
    complete();
    return;
  }
  op->outstanding = static_cast<uint32_t>(runs.size());
  std::vector<device::IoRequest> reqs;
  reqs.reserve(runs.size());
  auto shared_complete = std::make_shared<std::function<void()>>(std::move(complete));
  for (auto& r : runs) {
    device::IoRequest q;
    q.kind = r.kind;
    q.offset_bytes = r.grain * kGrainBytes;
    q.length_bytes = r.count * kGrainBytes;
    q.iov = r.iov.data();
    q.iovcnt = static_cast<int>(r.iov.size());
    q.done = [op, shared_complete](int64_t res) {
      if (res < 0) {
        int64_t zero = 0;
        op->error.compare_exchange_strong(zero, res);
      }
      if (--op->outstanding == 0) (*shared_complete)();
    };
    reqs.push_back(std::move(q));
  }
  dev.submit(reqs);
}

bool grain_direct(uint64_t offset, uint64_t length, const iovec* iov, int iovcnt) {
  if (offset % kGrainBytes != 0 || length % kGrainBytes != 0) return false;
  for (int i = 0; i < iovcnt; ++i) {
    if (reinterpret_cast<uintptr_t>(iov[i].iov_base) % kGrainBytes != 0 ||
        iov[i].iov_len % kGrainBytes != 0) {
      return false;
    }
  }
  return true;
}

GrainSplit split_at_grains(uint64_t offset, uint64_t end) {
  GrainSplit g;
  g.whole_first = div_round_up(offset, kGrainBytes);
  g.whole_end = end / kGrainBytes;
  if (g.whole_first > g.whole_end) {  // inside one grain
    g.edges.emplace_back(offset, end - offset);
    g.whole_end = g.whole_first;
    return g;
  }
  if (offset < g.whole_first * kGrainBytes) {
    g.edges.emplace_back(offset, g.whole_first * kGrainBytes - offset);
  }
  if (end > g.whole_end * kGrainBytes) {
    g.edges.emplace_back(g.whole_end * kGrainBytes, end - g.whole_end * kGrainBytes);
  }
  return g;
}

void Join::part(Result<void> r) {
  {
    std::lock_guard l(mu_);
    if (!r.ok() && result_.ok()) result_ = std::move(r);
    if (--pending_ > 0) return;
  }
  done_(std::move(result_));
}

}  // namespace vsfs::disk
