// Configuration of vsfs-mount: the table of keys, the TOML reader and the -o parser.
//
// Every key lives in one table, kKeys, with its type, its range and the field it sets;
// the TOML file and -o both go through that table, so a key cannot be valid in one and
// unknown in the other, and both give the same range messages. toml++ reports syntax
// errors by exception; they are caught here and turned into an Error, so nothing
// throws past this file.
// Thread-safety: no shared state; every function works on the Config it is given.

#include "mount/config.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>
#include <optional>
#include <string_view>
#include <variant>
#include <vector>

#include <toml++/toml.h>

namespace vsfs::mount {
namespace {

// kWord: one of the key's choices; kPath: an absolute path.
enum class KeyType { kInteger, kBoolean, kNumber, kWord, kPath };

using Field = std::variant<uint32_t*, uint64_t*, bool*, double*, std::string*>;

// One configuration key. Integer and number ranges are inclusive; integer bounds fit
// in a double exactly, so one pair of doubles serves both.
struct KeySpec {
  std::string_view table;
  std::string_view key;
  KeyType type;
  double min;
  double max;
  Field (*field)(Config&);
  std::string_view choices = {};  // kWord: the allowed words, separated by ", "
};

// The ranges are those written beside the fields in config.h. Sized by its entries: a
// declared size larger than the list added an empty entry (key "", no field) that
// `-o =0` found and called.
constexpr KeySpec kKeys[] = {
    {"fuse", "threads", KeyType::kInteger, 1, 64,
     [](Config& c) -> Field { return &c.fuse.threads; }},
    {"fuse", "max_background", KeyType::kInteger, 1, 65535,
     [](Config& c) -> Field { return &c.fuse.max_background; }},
    {"fuse", "io_uring", KeyType::kBoolean, 0, 1,
     [](Config& c) -> Field { return &c.fuse.io_uring; }},
    {"fuse", "uring_depth", KeyType::kInteger, 1, 1024,
     [](Config& c) -> Field { return &c.fuse.uring_depth; }},
    {"fuse", "uring_buffer_mib", KeyType::kInteger, 1, 65536,
     [](Config& c) -> Field { return &c.fuse.uring_buffer_mib; }},
    {"fuse", "max_write_kib", KeyType::kInteger, 4, 1024,
     [](Config& c) -> Field { return &c.fuse.max_write_kib; }},
    {"fuse", "attr_timeout_s", KeyType::kNumber, 0, 3600,
     [](Config& c) -> Field { return &c.fuse.attr_timeout_s; }},
    {"fuse", "entry_timeout_s", KeyType::kNumber, 0, 3600,
     [](Config& c) -> Field { return &c.fuse.entry_timeout_s; }},
    {"device", "queue_depth", KeyType::kInteger, 1, 4096,
     [](Config& c) -> Field { return &c.device.queue_depth; }},
    {"device", "direct", KeyType::kBoolean, 0, 1,
     [](Config& c) -> Field { return &c.device.direct; }},
    {"journal", "commit_interval_ms", KeyType::kInteger, 10, 60000,
     [](Config& c) -> Field { return &c.journal.commit_interval_ms; }},
    {"journal", "meta_cache_mib", KeyType::kInteger, 16, 65536,
     [](Config& c) -> Field { return &c.journal.meta_cache_mib; }},
    {"coalesce", "enabled", KeyType::kBoolean, 0, 1,
     [](Config& c) -> Field { return &c.coalesce.enabled; }},
    {"coalesce", "max_inflight", KeyType::kInteger, 1, 1024,
     [](Config& c) -> Field { return &c.coalesce.max_inflight; }},
    {"coalesce", "max_held", KeyType::kInteger, 1, 4096,
     [](Config& c) -> Field { return &c.coalesce.max_held; }},
    {"coalesce", "max_held_bytes", KeyType::kInteger, 4096, 1073741824,
     [](Config& c) -> Field { return &c.coalesce.max_held_bytes; }},
    {"coalesce", "hold_us_max", KeyType::kInteger, 10, 1000000,
     [](Config& c) -> Field { return &c.coalesce.hold_us_max; }},
    {"coalesce", "max_combined_kib", KeyType::kInteger, 4, 16384,
     [](Config& c) -> Field { return &c.coalesce.max_combined_kib; }},
    {"format", "rate_mib_s", KeyType::kInteger, 0, 100000,
     [](Config& c) -> Field { return &c.format.rate_mib_s; }},
    {"lease", "time_ms", KeyType::kInteger, 1000, 600000,
     [](Config& c) -> Field { return &c.lease.time_ms; }},
    {"cbt", "history", KeyType::kInteger, 16, 65536,
     [](Config& c) -> Field { return &c.cbt.history; }},
    {"cbt", "text_cache_mib", KeyType::kInteger, 1, 65536,
     [](Config& c) -> Field { return &c.cbt.text_cache_mib; }},
    {"snapshots", "takers", KeyType::kWord, 0, 0,
     [](Config& c) -> Field { return &c.snapshots.takers; }, "owner, writers, root"},
    {"snapshots", "max_per_directory", KeyType::kInteger, 0, 65532,
     [](Config& c) -> Field { return &c.snapshots.max_per_directory; }},
    {"snapshots", "max_per_user", KeyType::kInteger, 0, 65532,
     [](Config& c) -> Field { return &c.snapshots.max_per_user; }},
    {"snapshots", "max_held_mib_per_user", KeyType::kInteger, 0, 1ll << 40,
     [](Config& c) -> Field { return &c.snapshots.max_held_mib_per_user; }},
    {"log", "level", KeyType::kWord, 0, 0, [](Config& c) -> Field { return &c.log.level; },
     "error, warning, info, debug"},
    {"log", "file", KeyType::kPath, 0, 0, [](Config& c) -> Field { return &c.log.file; }},
};

bool is_table(std::string_view name) {
  for (const KeySpec& spec : kKeys) {
    if (spec.table == name) return true;
  }
  return false;
}

const KeySpec* find_key(std::string_view table, std::string_view key) {
  for (const KeySpec& spec : kKeys) {
    if (spec.table == table && spec.key == key) return &spec;
  }
  return nullptr;
}

// A bare -o key names a vsfs key only when exactly one table has it; otherwise the
// user must write table.key.
const KeySpec* find_bare_key(std::string_view key) {
  const KeySpec* found = nullptr;
  for (const KeySpec& spec : kKeys) {
    if (spec.key != key) continue;
    if (found != nullptr) return nullptr;
    found = &spec;
  }
  return found;
}

std::string expected_text(const KeySpec& spec) {
  switch (spec.type) {
    case KeyType::kInteger: return "expected an integer";
    case KeyType::kBoolean: return "expected a boolean";
    case KeyType::kNumber: return "expected a number";
    case KeyType::kWord: return fmt::format("expected one of {}", spec.choices);
    case KeyType::kPath: return "expected an absolute path";
  }
  return "expected a value";
}

// A value read from either source, before the range check.
using Value = std::variant<int64_t, bool, double, std::string>;

bool is_choice(std::string_view choices, std::string_view word) {
  while (!choices.empty()) {
    const size_t comma = choices.find(", ");
    if (choices.substr(0, comma) == word) return true;
    if (comma == std::string_view::npos) break;
    choices.remove_prefix(comma + 2);
  }
  return false;
}

// Checks the range and stores the value; returns the problem, or nullopt.
std::optional<std::string> store(Config& config, const KeySpec& spec, const Value& value) {
  if (spec.type == KeyType::kWord || spec.type == KeyType::kPath) {
    const std::string& text = std::get<std::string>(value);
    const bool ok = spec.type == KeyType::kWord ? is_choice(spec.choices, text)
                                                : (!text.empty() && text.front() == '/');
    if (!ok) return expected_text(spec);
    *std::get<std::string*>(spec.field(config)) = text;
    return std::nullopt;
  }
  if (spec.type != KeyType::kBoolean) {
    const double v = std::holds_alternative<int64_t>(value)
                         ? static_cast<double>(std::get<int64_t>(value))
                         : std::get<double>(value);
    // Written so that NaN fails too.
    if (!(v >= spec.min && v <= spec.max)) {
      return fmt::format("must be between {} and {}", spec.min, spec.max);
    }
  }
  Field field = spec.field(config);
  if (auto* p = std::get_if<uint32_t*>(&field)) {
    **p = static_cast<uint32_t>(std::get<int64_t>(value));
  } else if (auto* p = std::get_if<uint64_t*>(&field)) {
    **p = static_cast<uint64_t>(std::get<int64_t>(value));
  } else if (auto* p = std::get_if<bool*>(&field)) {
    **p = std::get<bool>(value);
  } else if (auto* p = std::get_if<double*>(&field)) {
    **p = std::holds_alternative<int64_t>(value)
              ? static_cast<double>(std::get<int64_t>(value))
              : std::get<double>(value);
  }
  return std::nullopt;
}

// The value of a TOML node as the key's type in `out`; false when the TOML type is wrong.
// (Out parameters rather than an optional: GCC 12 warns, wrongly, that an optional
// variant holding a string may be used uninitialized.)
// TOML has its own booleans, so the file does not take the -o spellings (on, 1, ...).
bool value_from_toml(const toml::node& node, KeyType type, Value& out) {
  switch (type) {
    case KeyType::kInteger:
      if (const auto* v = node.as_integer()) {
        out = Value{v->get()};
        return true;
      }
      return false;
    case KeyType::kBoolean:
      if (const auto* v = node.as_boolean()) {
        out = Value{v->get()};
        return true;
      }
      return false;
    case KeyType::kNumber:
      if (const auto* v = node.as_integer()) {
        out = Value{v->get()};
        return true;
      }
      if (const auto* v = node.as_floating_point()) {
        out = Value{v->get()};
        return true;
      }
      return false;
    case KeyType::kWord:
    case KeyType::kPath:
      if (const auto* v = node.as_string()) {
        out = Value{v->get()};
        return true;
      }
      return false;
  }
  return false;
}

// The value of an -o option's text as the key's type in `out`; false when it does not
// parse.
bool value_from_text(std::string_view text, KeyType type, Value& out) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  switch (type) {
    case KeyType::kInteger: {
      int64_t v = 0;
      auto [end, ec] = std::from_chars(first, last, v);
      if (text.empty() || ec != std::errc() || end != last) return false;
      out = Value{v};
      return true;
    }
    case KeyType::kBoolean:
      if (text == "true" || text == "1" || text == "on") {
        out = Value{true};
        return true;
      }
      if (text == "false" || text == "0" || text == "off") {
        out = Value{false};
        return true;
      }
      return false;
    case KeyType::kNumber: {
      double v = 0;
      auto [end, ec] = std::from_chars(first, last, v);
      if (text.empty() || ec != std::errc() || end != last) return false;
      out = Value{v};
      return true;
    }
    case KeyType::kWord:
    case KeyType::kPath:
      out = Value{std::string(text)};
      return true;
  }
  return false;
}

Error config_error(std::string message) {
  return Error{EINVAL, ErrorKind::kInvalidArgument, std::move(message)};
}

// Reads the whole file; the only place here that looks at errno.
Result<std::string> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return make_error(e, e == ENOENT ? ErrorKind::kNotFound : ErrorKind::kIo,
                      "{}: cannot read: {}", path, std::strerror(e));
  }
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      const int e = errno;
      if (e == EINTR) continue;
      ::close(fd);
      return make_error(e, ErrorKind::kIo, "{}: cannot read: {}", path, std::strerror(e));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

Result<void> apply_table(Config& config, const std::string& path, std::string_view table_name,
                         const toml::table& table) {
  for (const auto& [key, node] : table) {
    const KeySpec* spec = find_key(table_name, key.str());
    if (spec == nullptr) {
      return config_error(fmt::format("{}:{}: [{}] {}: unknown key", path,
                                      key.source().begin.line, table_name, key.str()));
    }
    const auto line = node.source().begin.line;
    Value value;
    if (!value_from_toml(node, spec->type, value)) {
      return config_error(fmt::format("{}:{}: [{}] {}: {}", path, line, table_name,
                                      key.str(), expected_text(*spec)));
    }
    if (auto problem = store(config, *spec, value)) {
      return config_error(
          fmt::format("{}:{}: [{}] {}: {}", path, line, table_name, key.str(), *problem));
    }
  }
  return {};
}

}  // namespace

Result<Config> load_config_file(const std::string& path) {
  VSFS_ASSIGN_OR_RETURN(std::string text, read_file(path));
  Config config;
  config.source = path;
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return config_error(fmt::format("{}:{}:{}: {}", path, e.source().begin.line,
                                    e.source().begin.column, e.description()));
  } catch (const std::exception& e) {
    return config_error(fmt::format("{}: {}", path, e.what()));
  }
  for (const auto& [key, node] : root) {
    const auto line = key.source().begin.line;
    if (!is_table(key.str())) {
      if (node.is_table()) {
        return config_error(fmt::format("{}:{}: [{}]: unknown table", path, line,
                                        key.str().empty() ? "\"\"" : key.str()));
      }
      return config_error(fmt::format(
          "{}:{}: {}: unknown key (keys belong in a table such as [fuse])", path, line,
          key.str()));
    }
    const toml::table* table = node.as_table();
    if (table == nullptr) {
      return config_error(fmt::format("{}:{}: {}: expected a table", path, line, key.str()));
    }
    VSFS_TRY(apply_table(config, path, key.str(), *table));
  }
  return config;
}

Result<void> apply_mount_options(Config& config, const std::string& options) {
  // Work on a copy so that a bad option leaves the caller's config untouched.
  Config next = config;
  std::string_view rest = options;
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    if (item.empty()) continue;

    if (item == "ro") {
      next.read_only = true;
      next.fuse_options.emplace_back(item);
      continue;
    }
    if (item == "rw") {
      next.read_only = false;
      std::erase(next.fuse_options, std::string("ro"));
      continue;
    }

    const size_t eq = item.find('=');
    std::string_view name = item.substr(0, eq);
    if (name.empty()) return config_error(fmt::format("-o {}: option without a name", item));
    // "coalesce=off" is the short spelling of "coalesce.enabled=off".
    if (name == "coalesce") name = "coalesce.enabled";
    // log_level and log_file: the spellings vsfs-mount(8) uses for [log] level and file.
    if (name == "log_level") name = "log.level";
    if (name == "log_file") name = "log.file";
    const KeySpec* spec = nullptr;
    const size_t dot = name.find('.');
    if (dot != std::string_view::npos) {
      const std::string_view table = name.substr(0, dot);
      if (is_table(table)) {
        spec = find_key(table, name.substr(dot + 1));
        if (spec == nullptr) {
          return config_error(fmt::format("-o {}: unknown key", item));
        }
      }
    } else {
      spec = find_bare_key(name);
    }
    if (spec == nullptr) {
      // Not a vsfs key: a FUSE or kernel mount option, passed on as written.
      next.fuse_options.emplace_back(item);
      continue;
    }
    if (eq == std::string_view::npos) {
      return config_error(fmt::format("-o {}: expected {}=VALUE", item, item.substr(0, eq)));
    }
    Value value;
    if (!value_from_text(item.substr(eq + 1), spec->type, value)) {
      return config_error(fmt::format("-o {}: {}", item, expected_text(*spec)));
    }
    if (auto problem = store(next, *spec, value)) {
      return config_error(fmt::format("-o {}: {}", item, *problem));
    }
  }
  config = std::move(next);
  return {};
}

}  // namespace vsfs::mount
