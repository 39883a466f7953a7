// A size on a program's command line: a whole number with an optional unit K, M, G or T
// (also KiB, MiB, GiB, TiB, KB, ...), powers of 1024 (vsfs-mkfs -s, vsfs-grow).
// Thread-safety: a pure function.
#pragma once

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

namespace vsfs::programs {

// "64M", "1G", "1.5T" is not accepted: sizes are whole numbers of a unit.
inline std::optional<uint64_t> parse_size(const std::string& text) {
  if (text.empty() || text[0] < '0' || text[0] > '9') return std::nullopt;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0) return std::nullopt;
  std::string suffix(end);
  for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.size() >= 2 && suffix.substr(suffix.size() - 2) == "IB") {
    suffix.resize(suffix.size() - 2);
  } else if (suffix.size() == 2 && suffix[1] == 'B') {
    suffix.resize(1);
  }
  unsigned shift = 0;
  if (suffix.empty() || suffix == "B") {
    shift = 0;
  } else if (suffix == "K") {
    shift = 10;
  } else if (suffix == "M") {
    shift = 20;
  } else if (suffix == "G") {
    shift = 30;
  } else if (suffix == "T") {
    shift = 40;
  } else {
    return std::nullopt;
  }
  if (shift > 0 && v > (UINT64_MAX >> shift)) return std::nullopt;
  return static_cast<uint64_t>(v) << shift;
}

}  // namespace vsfs::programs
