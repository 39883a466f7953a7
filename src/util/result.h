// Result<T>: the value of an operation or the error that stopped it.
//
// Operating errors are values in vsfs: every fallible function returns a Result, and
// no exception crosses a layer. An Error carries the errno a caller outside vsfs
// should see, a vsfs category, and a message for logs and program output.
// Thread-safety: plain values; no shared state.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace vsfs {

enum class ErrorKind {
  kIo,              // the device failed an IO
  kCorruption,      // metadata failed validation
  kNoSpace,         // the datastore is full
  kUnsupported,     // a feature or request vsfs does not support
  kInvalidArgument, // bad input from a caller
  kNotFound,
  kExists,
  kBusy,            // the resource is in use (device locked, datastore mounted)
  kState,           // the operation is not valid in the current state
  kWouldBlock,      // the answer needs device IO the caller asked not to wait for
};

const char* error_kind_name(ErrorKind kind);

struct Error {
  int errno_value = EIO;
  ErrorKind kind = ErrorKind::kIo;
  std::string message;

  std::string to_string() const;
};

template <typename... Args>
Error make_error(int errno_value, ErrorKind kind, fmt::format_string<Args...> f,
                 Args&&... args) {
  return Error{errno_value, kind, fmt::format(f, std::forward<Args>(args)...)};
}

inline Error corruption(std::string message) {
  return Error{EUCLEAN, ErrorKind::kCorruption, std::move(message)};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}        // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { check_ok(); return std::get<0>(v_); }
  const T& value() const& { check_ok(); return std::get<0>(v_); }
  T&& value() && { check_ok(); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }
  Error&& take_error() { return std::get<1>(std::move(v_)); }

 private:
  void check_ok() const {
    if (!ok()) {
      fmt::print(stderr, "vsfs: Result accessed without a value: {}\n",
                 std::get<1>(v_).to_string());
      std::abort();
    }
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }
  Error&& take_error() { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> ok_result() { return {}; }

}  // namespace vsfs

// Propagates an error from an expression returning a Result.
#define VSFS_TRY(expr)                                   \
  do {                                                   \
    auto vsfs_try_r_ = (expr);                           \
    if (!vsfs_try_r_.ok()) return vsfs_try_r_.take_error(); \
  } while (0)

#define VSFS_CONCAT_INNER_(a, b) a##b
#define VSFS_CONCAT_(a, b) VSFS_CONCAT_INNER_(a, b)
// Assigns the value of a Result to `lhs`, or returns its error.
#define VSFS_ASSIGN_OR_RETURN(lhs, expr) \
  VSFS_ASSIGN_OR_RETURN_IMPL_(VSFS_CONCAT_(vsfs_r_, __LINE__), lhs, expr)
#define VSFS_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.take_error();           \
  lhs = std::move(tmp).value()
