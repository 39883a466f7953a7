// vsfs-corrupt: damages the metadata of a vsfs datastore image on purpose, for
// tests/integration/corrupt_test.sh.
//
//   vsfs-corrupt list IMAGE                 every live metadata grain: "GRAIN TYPE"
//   vsfs-corrupt flip IMAGE SEED [MODE]     flips bits in one live metadata grain
//
// A grain is live metadata when it decodes (through the format's own header check) as a
// metadata block at its own address and is either a superblock, in the block table or
// refcount table regions, or a grain of the data space with a nonzero reference count.
// The journal ring is left alone: after a clean unmount it holds nothing to replay.
//
// `flip` derives everything from SEED: the block type (uniform over the types present,
// so a rare superblock or snapshot list is hit as often as the many map leaves), the
// grain of that type, 1..6 distinct bits (half the time inside the header and the
// payload bytes in use, else anywhere in the grain), and, for MODE `any` (the default),
// whether the crc is resealed so the block still passes its checksum (`reseal`) or left
// broken (`plain`). It prints one line saying what it did, with the mode first.
// Single-threaded; reads and writes IMAGE with pread/pwrite.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "format/format.h"
#include "util/units.h"

namespace {

using vsfs::kGrainBytes;
using vsfs::format::BlockType;

constexpr const char* kProg = "vsfs-corrupt";

int usage() {
  std::fprintf(stderr,
               "usage: %s list IMAGE\n"
               "       %s flip IMAGE SEED [plain|reseal|any]\n",
               kProg, kProg);
  return 2;
}

class Image {
 public:
  explicit Image(const char* path, bool write) {
    fd_ = ::open(path, write ? O_RDWR : O_RDONLY);
  }
  ~Image() {
    if (fd_ >= 0) ::close(fd_);
  }
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  bool ok() const { return fd_ >= 0; }
  bool read(uint64_t grain, std::vector<uint8_t>& buf) const {
    buf.resize(kGrainBytes);
    return ::pread(fd_, buf.data(), kGrainBytes, static_cast<off_t>(grain * kGrainBytes)) ==
           static_cast<ssize_t>(kGrainBytes);
  }
  bool write(uint64_t grain, const std::vector<uint8_t>& buf) const {
    return ::pwrite(fd_, buf.data(), kGrainBytes, static_cast<off_t>(grain * kGrainBytes)) ==
               static_cast<ssize_t>(kGrainBytes) &&
           ::fsync(fd_) == 0;
  }

 private:
  int fd_ = -1;
};

vsfs::format::ConstGrain cg(const std::vector<uint8_t>& v) {
  return vsfs::format::ConstGrain(v.data(), kGrainBytes);
}

// The metadata type of `buf` when it decodes as one at `self` (superblocks at 0).
bool meta_type(const std::vector<uint8_t>& buf, uint64_t self, BlockType* type) {
  uint32_t magic = 0;
  uint16_t t = 0;
  std::memcpy(&magic, buf.data() + vsfs::format::kOffMagic, 4);
  std::memcpy(&t, buf.data() + vsfs::format::kOffType, 2);
  if (magic != vsfs::format::kMetaMagic || t < 1 || t > 12) return false;
  const auto bt = static_cast<BlockType>(t);
  auto h = vsfs::format::decode_header(cg(buf), bt, bt == BlockType::kSuperblock ? 0 : self);
  if (!h.ok()) return false;
  *type = bt;
  return true;
}

struct Found {
  uint64_t grain;
  BlockType type;
};

// Every live metadata grain, in grain order; false when the image has no datastore.
bool list_live(const Image& img, std::vector<Found>& out) {
  std::vector<uint8_t> buf;
  vsfs::format::Superblock sb;
  bool have_sb = false;
  for (uint64_t g : {uint64_t{0}, vsfs::format::kSuperblockCopyGrain}) {
    if (!img.read(g, buf)) continue;
    auto d = vsfs::format::decode_superblock(cg(buf));
    if (!d.ok()) continue;
    out.push_back(Found{g, BlockType::kSuperblock});
    if (!have_sb) sb = *d;
    have_sb = true;
  }
  if (!have_sb) return false;
  BlockType type;
  for (uint64_t i = 0; i < sb.block_table_grains; ++i) {
    const uint64_t g = sb.block_table_start_grain + i;
    if (img.read(g, buf) && meta_type(buf, g, &type)) out.push_back(Found{g, type});
  }
  const uint64_t total_grains = sb.total_blocks * vsfs::kGrainsPerBlock;
  const uint64_t data_start = sb.first_data_block * vsfs::kGrainsPerBlock;
  std::vector<uint8_t> grain_buf;
  for (uint64_t i = 0; i < sb.refcount_grains; ++i) {
    const uint64_t self = sb.refcount_start_grain + i;
    if (!img.read(self, buf) || !meta_type(buf, self, &type)) continue;
    out.push_back(Found{self, type});
    auto counts = vsfs::format::decode_refcounts(cg(buf), self);
    if (!counts.ok()) continue;
    for (uint64_t k = 0; k < vsfs::format::kGrainsPerRefcountGrain; ++k) {
      const uint64_t g = i * vsfs::format::kGrainsPerRefcountGrain + k;
      if (g < data_start || g >= total_grains || counts->counts[k] == 0) continue;
      if (img.read(g, grain_buf) && meta_type(grain_buf, g, &type)) {
        out.push_back(Found{g, type});
      }
    }
  }
  return true;
}

int cmd_list(const char* path) {
  Image img(path, false);
  if (!img.ok()) {
    std::fprintf(stderr, "%s: cannot open %s: %s\n", kProg, path, std::strerror(errno));
    return 1;
  }
  std::vector<Found> found;
  if (!list_live(img, found)) {
    std::fprintf(stderr, "%s: %s holds no datastore\n", kProg, path);
    return 1;
  }
  for (const Found& f : found) {
    std::printf("%llu %s\n", static_cast<unsigned long long>(f.grain),
                vsfs::format::block_type_name(f.type));
  }
  return 0;
}

int cmd_flip(const char* path, uint64_t seed, const std::string& mode) {
  Image img(path, true);
  if (!img.ok()) {
    std::fprintf(stderr, "%s: cannot open %s: %s\n", kProg, path, std::strerror(errno));
    return 1;
  }
  std::vector<Found> found;
  if (!list_live(img, found)) {
    std::fprintf(stderr, "%s: %s holds no datastore\n", kProg, path);
    return 1;
  }
  std::map<BlockType, std::vector<uint64_t>> by_type;
  for (const Found& f : found) by_type[f.type].push_back(f.grain);
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  auto t = by_type.begin();
  std::advance(t, static_cast<long>(pick(by_type.size())));
  const uint64_t grain = t->second[pick(t->second.size())];
  const bool reseal = mode == "reseal" || (mode == "any" && pick(2) == 1);
  std::vector<uint8_t> buf;
  if (!img.read(grain, buf)) {
    std::fprintf(stderr, "%s: reading grain %llu failed\n", kProg,
                 static_cast<unsigned long long>(grain));
    return 1;
  }
  uint32_t length = 0;
  std::memcpy(&length, buf.data() + vsfs::format::kOffLength, 4);
  const uint64_t used_bytes = vsfs::format::kHeaderBytes + std::min<uint64_t>(
                                                               length, vsfs::format::kPayloadBytes);
  const uint64_t span = pick(2) == 0 ? used_bytes : kGrainBytes;
  const unsigned nbits = 1 + static_cast<unsigned>(pick(6));
  std::set<uint64_t> bits;
  while (bits.size() < nbits) bits.insert(pick(span * 8));
  std::string what;
  for (uint64_t bit : bits) {
    buf[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    what += " " + std::to_string(bit / 8) + "." + std::to_string(bit % 8);
  }
  if (reseal) vsfs::format::seal(vsfs::format::Grain(buf.data(), kGrainBytes));
  if (!img.write(grain, buf)) {
    std::fprintf(stderr, "%s: writing grain %llu failed\n", kProg,
                 static_cast<unsigned long long>(grain));
    return 1;
  }
  std::printf("%s grain %llu (%s): flipped %u bit%s at byte.bit%s\n",
              reseal ? "reseal" : "plain", static_cast<unsigned long long>(grain),
              vsfs::format::block_type_name(t->first), nbits, nbits == 1 ? "" : "s",
              what.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string cmd = argv[1];
  if (cmd == "list" && argc == 3) return cmd_list(argv[2]);
  if (cmd == "flip" && (argc == 4 || argc == 5)) {
    const std::string mode = argc == 5 ? argv[4] : "any";
    if (mode != "plain" && mode != "reseal" && mode != "any") return usage();
    char* end = nullptr;
    const unsigned long long seed = std::strtoull(argv[3], &end, 10);
    if (end == argv[3] || *end != '\0') return usage();
    return cmd_flip(argv[2], seed, mode);
  }
  return usage();
}
