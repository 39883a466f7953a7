// Names and formatting of errors.
#include "util/result.h"

#include <cstring>

namespace vsfs {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kIo: return "io";
    case ErrorKind::kCorruption: return "corruption";
    case ErrorKind::kNoSpace: return "no-space";
    case ErrorKind::kUnsupported: return "unsupported";
    case ErrorKind::kInvalidArgument: return "invalid-argument";
    case ErrorKind::kNotFound: return "not-found";
    case ErrorKind::kExists: return "exists";
    case ErrorKind::kBusy: return "busy";
    case ErrorKind::kState: return "state";
    case ErrorKind::kWouldBlock: return "would-block";
  }
  return "unknown";
}

std::string Error::to_string() const {
  if (message.empty()) return fmt::format("{} ({})", error_kind_name(kind), std::strerror(errno_value));
  return message;
}

}  // namespace vsfs
