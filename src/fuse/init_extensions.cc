#include "fuse/init_extensions.h"

#include <linux/fuse.h>

#include <cstring>

namespace vsfs::fuse {

void InitExtensions::want(uint64_t flags) {
  std::lock_guard lk(mu_);
  wanted_ |= flags;
}

void InitExtensions::on_request(const char* request, size_t size) {
  fuse_in_header in;
  fuse_init_in init;
  if (size < sizeof(in) + sizeof(init)) return;  // a kernel too old for flags2
  std::memcpy(&in, request, sizeof(in));
  std::memcpy(&init, request + sizeof(in), sizeof(init));
  uint64_t flags = init.flags;
  if (flags & FUSE_INIT_EXT) flags |= static_cast<uint64_t>(init.flags2) << 32;
  std::lock_guard lk(mu_);
  offered_ = flags;
  unique_ = in.unique;
  pending_ = true;
}

uint64_t InitExtensions::on_reply(iovec* iov, int count) {
  fuse_out_header out;
  if (count != 2 || iov[0].iov_len != sizeof(out) || iov[1].iov_len != sizeof(fuse_init_out)) {
    return 0;
  }
  std::memcpy(&out, iov[0].iov_base, sizeof(out));
  std::lock_guard lk(mu_);
  if (!pending_ || out.unique != unique_ || out.error != 0) return 0;
  pending_ = false;
  const uint64_t add = wanted_ & offered_;
  granted_ = add;
  if (add == 0) return 0;
  auto* init = static_cast<fuse_init_out*>(iov[1].iov_base);
  init->flags |= FUSE_INIT_EXT | static_cast<uint32_t>(add);
  init->flags2 |= static_cast<uint32_t>(add >> 32);
  return add;
}

uint64_t InitExtensions::granted() const {
  std::lock_guard lk(mu_);
  return granted_;
}

}  // namespace vsfs::fuse
