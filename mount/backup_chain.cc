#include "mount/backup_chain.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iterator>
#include <sstream>

#include "util/human.h"

namespace vsfs::backup {

namespace {

constexpr const char* kCatalogHeader = "vsfs-backup-catalog 1";
constexpr const char* kExtentsHeader = "vsfs-backup-extents 1";

Error sys_error(int err, const std::string& what, const std::string& path) {
  return Error{err, ErrorKind::kIo, fmt::format("{} {}: {}", what, path, std::strerror(err))};
}

Error bad_file(const std::string& path, size_t line, const std::string& why) {
  return corruption(fmt::format("{}:{}: {}", path, line, why));
}

bool parse_u64(const std::string& word, uint64_t* out) {
  if (word.empty() || word[0] < '0' || word[0] > '9') return false;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(word.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

std::vector<std::string> words_of(const std::string& line) {
  std::istringstream in(line);
  return {std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

// One `disk KIND SIZE COPIED EXTENTS DATA ZERO PATH` line of the catalogue.
Result<DiskRecord> parse_disk(const std::vector<std::string>& w) {
  DiskRecord d;
  if (w.size() != 8) return corruption("a disk line needs 8 words");
  if (w[1] == "full") {
    d.kind = DiskKind::kFull;
  } else if (w[1] == "incremental") {
    d.kind = DiskKind::kIncremental;
  } else if (w[1] == "absent") {
    d.kind = DiskKind::kAbsent;
  } else {
    return corruption("unknown disk kind '" + w[1] + "'");
  }
  if (!parse_u64(w[2], &d.size_bytes) || !parse_u64(w[3], &d.copied_bytes) ||
      !parse_u64(w[4], &d.extents) || !parse_u64(w[5], &d.data_bytes) ||
      !parse_u64(w[6], &d.zero_bytes)) {
    return corruption("a disk line's numbers do not parse");
  }
  VSFS_ASSIGN_OR_RETURN(d.path, unescape(w[7]));
  return d;
}

Result<Point> parse_point_header(const std::vector<std::string>& w, uint64_t* disks) {
  Point p;
  if (w.size() != 6) return corruption("a point line needs 6 words");
  uint64_t time_s = 0;
  if (!parse_u64(w[1], &p.number) || !parse_u64(w[3], &p.change_id) ||
      !parse_u64(w[4], &time_s) || !parse_u64(w[5], disks)) {
    return corruption("a point line's numbers do not parse");
  }
  p.time_s = static_cast<int64_t>(time_s);
  VSFS_ASSIGN_OR_RETURN(p.snapshot, unescape(w[2]));
  return p;
}

// Everything after the header: `point` lines, their `disk` lines and an `end` line.
Result<void> parse_points(const std::vector<std::string>& lines, size_t first,
                          const std::string& path, Catalog* c) {
  for (size_t i = first; i < lines.size(); ++i) {
    const auto w = words_of(lines[i]);
    if (w.empty()) continue;
    if (w[0] != "point") return bad_file(path, i + 1, "expected a point line");
    uint64_t disks = 0;
    auto p = parse_point_header(w, &disks);
    if (!p.ok()) return bad_file(path, i + 1, p.error().message);
    if (p->number != c->points.size()) return bad_file(path, i + 1, "points out of order");
    for (uint64_t k = 0; k < disks; ++k) {
      if (++i >= lines.size()) return bad_file(path, i, "truncated point");
      const auto dw = words_of(lines[i]);
      auto d = dw.empty() || dw[0] != "disk" ? Result<DiskRecord>(corruption("expected a disk line"))
                                             : parse_disk(dw);
      if (!d.ok()) return bad_file(path, i + 1, d.error().message);
      p->disks.push_back(std::move(*d));
    }
    if (++i >= lines.size() || lines[i] != fmt::format("end {}", p->number)) {
      return bad_file(path, i + 1, "point without its end line");
    }
    c->points.push_back(std::move(*p));
  }
  return ok_result();
}

void erase_range(std::map<uint64_t, Piece>& m, uint64_t from, uint64_t to) {
  auto it = m.upper_bound(from);
  if (it != m.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end_bytes > from) {
      if (prev->second.end_bytes > to) {
        Piece tail = prev->second;
        m.emplace(to, tail);
      }
      prev->second.end_bytes = from;
      if (prev->first == from) m.erase(prev);
    }
  }
  it = m.lower_bound(from);
  while (it != m.end() && it->first < to) {
    if (it->second.end_bytes > to) {
      Piece tail = it->second;
      m.erase(it);
      m.emplace(to, tail);
      break;
    }
    it = m.erase(it);
  }
}

// The points of `path`'s chain ending at `point`, oldest (the full copy) first.
Result<std::vector<const Point*>> chain_of(const Catalog& c, const Point& point,
                                           const std::string& path) {
  std::vector<const Point*> chain;
  for (uint64_t n = point.number + 1; n-- > 0;) {
    const Point& p = c.points[n];
    const DiskRecord* d = p.find(path);
    if (d == nullptr || d->kind == DiskKind::kAbsent) {
      if (chain.empty()) {
        return make_error(ENOENT, ErrorKind::kNotFound, "disk {} is not in point {}", path, point.number);
      }
      return corruption(fmt::format("point {} holds no record of {} before its incremental at point {}",
                                    n, path, chain.back()->number));
    }
    chain.push_back(&p);
    if (d->kind == DiskKind::kFull) return std::vector<const Point*>(chain.rbegin(), chain.rend());
  }
  return corruption(fmt::format("no full copy of {} before point {}", path, point.number));
}

}  // namespace

const char* disk_kind_name(DiskKind kind) {
  switch (kind) {
    case DiskKind::kFull: return "full";
    case DiskKind::kIncremental: return "incremental";
    case DiskKind::kAbsent: return "absent";
  }
  return "?";
}

const DiskRecord* Point::find(const std::string& path) const {
  for (const auto& d : disks) {
    if (d.path == path) return &d;
  }
  return nullptr;
}

const Point* Catalog::find(const std::string& number_or_name) const {
  for (const auto& p : points) {
    if (p.snapshot == number_or_name) return &p;
  }
  uint64_t n = 0;
  if (parse_u64(number_or_name, &n) && n < points.size()) return &points[n];
  return nullptr;
}

std::string escape(const std::string& s) {
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || std::strchr("._-+,=@:/", ch) != nullptr) {
      out += static_cast<char>(ch);
    } else {
      out += fmt::format("%{:02X}", ch);
    }
  }
  return out.empty() ? "%" : out;  // "%" alone: the empty string (VMDIR ".")
}

Result<std::string> unescape(const std::string& s) {
  if (s == "%") return std::string();
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    const std::string hex = i + 2 < s.size() ? s.substr(i + 1, 2) : std::string();
    if (hex.size() != 2 || !std::isxdigit(static_cast<unsigned char>(hex[0])) ||
        !std::isxdigit(static_cast<unsigned char>(hex[1]))) {
      return corruption("bad escape in '" + s + "'");
    }
    out += static_cast<char>(std::stoi(hex, nullptr, 16));
    i += 2;
  }
  return out;
}

Result<Catalog> read_catalog(const std::string& backup_dir, bool* exists) {
  const std::string path = backup_dir + "/catalog";
  Catalog c;
  auto text = read_text(path);
  if (!text.ok()) {
    if (text.error().errno_value != ENOENT) return text.take_error();
    *exists = false;
    return c;
  }
  *exists = true;
  const auto lines = lines_of(*text);
  if (lines.empty() || lines[0] != kCatalogHeader) {
    return bad_file(path, 1, fmt::format("not a vsfs-backup catalogue (expected '{}')", kCatalogHeader));
  }
  const auto ds = lines.size() > 1 ? words_of(lines[1]) : std::vector<std::string>{};
  const auto vm = lines.size() > 2 ? words_of(lines[2]) : std::vector<std::string>{};
  if (ds.size() != 2 || ds[0] != "datastore") return bad_file(path, 2, "expected 'datastore UUID'");
  if (vm.size() != 2 || vm[0] != "vmdir") return bad_file(path, 3, "expected 'vmdir PATH'");
  c.datastore_uuid = ds[1];
  auto vmdir = unescape(vm[1]);
  if (!vmdir.ok()) return bad_file(path, 3, vmdir.error().message);
  c.vmdir = *vmdir;
  VSFS_TRY(parse_points(lines, 3, path, &c));
  return c;
}

Result<void> write_catalog(const std::string& backup_dir, const Catalog& c) {
  std::string text = fmt::format("{}\ndatastore {}\nvmdir {}\n", kCatalogHeader,
                                 c.datastore_uuid, escape(c.vmdir));
  for (const auto& p : c.points) {
    text += fmt::format("point {} {} {} {} {}\n", p.number, escape(p.snapshot), p.change_id,
                        p.time_s, p.disks.size());
    for (const auto& d : p.disks) {
      text += fmt::format("disk {} {} {} {} {} {} {}\n", disk_kind_name(d.kind), d.size_bytes,
                          d.copied_bytes, d.extents, d.data_bytes, d.zero_bytes, escape(d.path));
    }
    text += fmt::format("end {}\n", p.number);
  }
  const std::string tmp = backup_dir + "/catalog.tmp";
  {
    VSFS_ASSIGN_OR_RETURN(Fd fd, open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC));
    VSFS_TRY(write_exact(fd.get(), tmp, text.data(), text.size(), 0));
    if (::fsync(fd.get()) != 0) return sys_error(errno, "fsync", tmp);
  }
  const std::string path = backup_dir + "/catalog";
  if (::rename(tmp.c_str(), path.c_str()) != 0) return sys_error(errno, "rename to", path);
  return fsync_path(backup_dir);
}

Result<std::vector<Extent>> read_cbt_map(const std::string& path) {
  VSFS_ASSIGN_OR_RETURN(std::string text, read_text(path));
  std::vector<Extent> out;
  const auto lines = lines_of(text);
  uint64_t end = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto w = words_of(lines[i]);
    Extent e;
    if (w.size() != 3 || !parse_u64(w[0], &e.offset_bytes) || !parse_u64(w[1], &e.length_bytes) ||
        (w[2] != "data" && w[2] != "zero")) {
      return bad_file(path, i + 1, "expected 'OFFSET LENGTH data|zero'");
    }
    if (e.offset_bytes < end || e.length_bytes == 0 || e.offset_bytes + e.length_bytes < e.offset_bytes) {
      return bad_file(path, i + 1, "extents out of order or overlapping");
    }
    end = e.offset_bytes + e.length_bytes;
    e.data = w[2] == "data";
    out.push_back(e);
  }
  return out;
}

Result<std::vector<Extent>> read_extents(const std::string& path) {
  VSFS_ASSIGN_OR_RETURN(std::string text, read_text(path));
  const auto lines = lines_of(text);
  if (lines.empty() || lines[0].rfind(kExtentsHeader, 0) != 0) {
    return bad_file(path, 1, fmt::format("not an extent list (expected '{}')", kExtentsHeader));
  }
  std::vector<Extent> out;
  for (size_t i = 1; i < lines.size(); ++i) {
    const auto w = words_of(lines[i]);
    Extent e;
    const bool shape = (w.size() == 4 && w[2] == "data") || (w.size() == 3 && w[2] == "zero");
    if (!shape || !parse_u64(w[0], &e.offset_bytes) || !parse_u64(w[1], &e.length_bytes)) {
      return bad_file(path, i + 1, "expected 'OFFSET LENGTH data CRC32C' or 'OFFSET LENGTH zero'");
    }
    e.data = w[2] == "data";
    if (e.data) {
      char* end = nullptr;
      e.crc = static_cast<uint32_t>(std::strtoul(w[3].c_str(), &end, 16));
      if (*end != '\0') return bad_file(path, i + 1, "bad crc32c '" + w[3] + "'");
    }
    out.push_back(e);
  }
  return out;
}

Result<void> write_extents(const std::string& path, const DiskRecord& d,
                           const std::vector<Extent>& extents) {
  std::string text = fmt::format("{} size {} disk {}\n", kExtentsHeader, d.size_bytes, escape(d.path));
  for (const auto& e : extents) {
    if (e.data) {
      text += fmt::format("{} {} data {:08x}\n", e.offset_bytes, e.length_bytes, e.crc);
    } else {
      text += fmt::format("{} {} zero\n", e.offset_bytes, e.length_bytes);
    }
  }
  VSFS_ASSIGN_OR_RETURN(Fd fd, open_file(path, O_WRONLY | O_CREAT | O_TRUNC));
  VSFS_TRY(write_exact(fd.get(), path, text.data(), text.size(), 0));
  if (::fsync(fd.get()) != 0) return sys_error(errno, "fsync", path);
  return ok_result();
}

std::string point_dir(const std::string& backup_dir, uint64_t number) {
  return fmt::format("{}/points/{}", backup_dir, number);
}

std::string disk_file(const std::string& backup_dir, uint64_t number, size_t index,
                      const char* suffix) {
  return fmt::format("{}/{}.{}", point_dir(backup_dir, number), index, suffix);
}

uint64_t DiskMap::data_bytes() const {
  uint64_t n = 0;
  for (const auto& [start, piece] : pieces) n += piece.end_bytes - start;
  return n;
}

Result<DiskMap> build_disk_map(const std::string& backup_dir, const Catalog& c,
                               const Point& point, const std::string& path) {
  VSFS_ASSIGN_OR_RETURN(auto chain, chain_of(c, point, path));
  DiskMap map;
  map.path = path;
  for (const Point* p : chain) {
    const DiskRecord& d = *p->find(path);
    const size_t index = p->index_of(d);
    VSFS_ASSIGN_OR_RETURN(auto extents, read_extents(disk_file(backup_dir, p->number, index, "extents")));
    // A shrink drops what lay beyond; a later growth reads zero there until written.
    erase_range(map.pieces, d.size_bytes, UINT64_MAX);
    map.size_bytes = d.size_bytes;
    const std::string data_file = disk_file(backup_dir, p->number, index, "data");
    for (const auto& e : extents) {
      erase_range(map.pieces, e.offset_bytes, e.offset_bytes + e.length_bytes);
      if (e.data) map.pieces.emplace(e.offset_bytes, Piece{e.offset_bytes + e.length_bytes, data_file, e});
    }
  }
  return map;
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Result<Fd> open_file(const std::string& path, int flags, mode_t mode) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) return sys_error(errno, "cannot open", path);
  return Fd(fd);
}

Result<void> read_exact(int fd, const std::string& path, void* buf, uint64_t length,
                        uint64_t offset) {
  auto* p = static_cast<uint8_t*>(buf);
  while (length > 0) {
    const ssize_t n = ::pread(fd, p, length, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(errno, "read of", path);
    if (n == 0) {
      return make_error(EIO, ErrorKind::kIo, "{}: ends before offset {} (short read)", path, offset);
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    length -= static_cast<uint64_t>(n);
  }
  return ok_result();
}

Result<void> write_exact(int fd, const std::string& path, const void* buf, uint64_t length,
                         uint64_t offset) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (length > 0) {
    const ssize_t n = ::pwrite(fd, p, length, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return sys_error(n < 0 ? errno : EIO, "write to", path);
    p += n;
    offset += static_cast<uint64_t>(n);
    length -= static_cast<uint64_t>(n);
  }
  return ok_result();
}

Result<void> fsync_path(const std::string& path) {
  VSFS_ASSIGN_OR_RETURN(Fd fd, open_file(path, O_RDONLY));
  if (::fsync(fd.get()) != 0) return sys_error(errno, "fsync", path);
  return ok_result();
}

Result<void> make_dirs(const std::string& path) {
  for (size_t slash = 1; slash <= path.size(); ++slash) {
    if (slash != path.size() && path[slash] != '/') continue;
    const std::string prefix = path.substr(0, slash);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return sys_error(errno, "cannot create directory", prefix);
    }
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return sys_error(errno, "cannot stat", path);
  if (!S_ISDIR(st.st_mode)) return make_error(ENOTDIR, ErrorKind::kInvalidArgument, "{} is not a directory", path);
  return ok_result();
}

Result<std::string> read_text(const std::string& path) {
  VSFS_ASSIGN_OR_RETURN(Fd fd, open_file(path, O_RDONLY));
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error(errno, "read of", path);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

Progress::Progress(const char* prog, uint64_t total_bytes)
    : prog_(prog), total_bytes_(total_bytes), tty_(::isatty(STDERR_FILENO) == 1), start_s_(now_s()) {}

void Progress::add(uint64_t bytes) {
  done_bytes_ += bytes;
  if (tty_ && now_s() - drawn_s_ >= 0.2) draw(false);
}

void Progress::finish() {
  if (tty_) draw(true);
}

void Progress::draw(bool last) {
  drawn_s_ = now_s();
  const double elapsed = drawn_s_ - start_s_;
  const double rate = elapsed > 0 ? static_cast<double>(done_bytes_) / elapsed : 0;
  std::fprintf(stderr, "\r%s: %s of %s, %s/s   %s", prog_, vsfs::human_bytes(done_bytes_).c_str(),
               vsfs::human_bytes(total_bytes_).c_str(), vsfs::human_bytes(static_cast<uint64_t>(rate)).c_str(),
               last ? "\n" : "");
  std::fflush(stderr);
}

double now_s() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

std::string format_time(int64_t unix_s) {
  const time_t t = static_cast<time_t>(unix_s);
  tm utc;
  ::gmtime_r(&t, &utc);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

}  // namespace vsfs::backup
