// Session, MountPoint and SignalHandlers: see session.h.
// Thread-safety: main thread only, except the log function (any libfuse thread; one
// mutex around the last message).
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "fuse/fuse_fs.h"
#include "fuse/ops.h"
#include "fuse/session.h"
#include "util/log.h"

namespace vsfs::fuse {
namespace {

std::mutex g_message_mu;
std::string g_partial;       // guarded by g_message_mu: a line libfuse has not ended yet
std::string g_last_message;  // guarded by g_message_mu: the last complete line

// libfuse sometimes writes one line in several calls: gather until the newline.
void fuse_log_to_vsfs(enum fuse_log_level level, const char* fmt, va_list ap) {
  char text[1024];
  std::vsnprintf(text, sizeof(text), fmt, ap);
  std::string s;
  {
    std::lock_guard lock(g_message_mu);
    g_partial += text;
    if (g_partial.empty() || g_partial.back() != '\n') return;
    s = std::move(g_partial);
    g_partial.clear();
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    if (s.rfind("fuse: ", 0) == 0) s.erase(0, 6);
    g_last_message = s;
  }
  // Debug only: the caller reports a failure in its own words, in one line.
  VSFS_LOG_DEBUG("libfuse[{}]: {}", static_cast<int>(level), s);
}

// Escapes ',' and '\' in one -o value (fuse_opt's quoting).
std::string escape_option(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace

void capture_fuse_messages() { fuse_set_log_func(fuse_log_to_vsfs); }

std::string last_fuse_message() {
  std::lock_guard lock(g_message_mu);
  return g_last_message;
}

namespace {

// fuse_session_new with the options of `options`; userdata may be null for validation.
Result<fuse_session*> new_session(const SessionOptions& options, void* userdata) {
  // default_permissions: the kernel checks modes and owners (the library does not).
  std::string builtin = "fsname=" + escape_option(options.fsname) +
                        ",subtype=vsfs,default_permissions";
  if (options.read_only) builtin += ",ro";
  std::vector<std::string> argv_s = {"vsfs-mount", "-o", builtin};
  for (const std::string& o : options.fuse_options) {
    argv_s.push_back("-o");
    argv_s.push_back(o);
  }
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv_s.size()), argv.data());
  {
    std::lock_guard lock(g_message_mu);
    g_last_message.clear();
  }
  fuse_session* se = fuse_session_new(&args, &ops_table(), sizeof(fuse_lowlevel_ops), userdata);
  fuse_opt_free_args(&args);
  if (se == nullptr) {
    std::string why = last_fuse_message();
    return make_error(EINVAL, ErrorKind::kInvalidArgument, "bad FUSE options: {}",
                      why.empty() ? "fuse_session_new failed" : why);
  }
  return se;
}

}  // namespace

Result<std::unique_ptr<Session>> Session::create(FuseFs& fs, const SessionOptions& options) {
  VSFS_ASSIGN_OR_RETURN(fuse_session * se, new_session(options, &fs));
  return std::unique_ptr<Session>(new Session(se));
}

Result<void> Session::validate(const SessionOptions& options) {
  VSFS_ASSIGN_OR_RETURN(fuse_session * se, new_session(options, nullptr));
  fuse_session_destroy(se);
  return ok_result();
}

Session::~Session() { fuse_session_destroy(se_); }

Result<std::unique_ptr<MountPoint>> MountPoint::create(Session& session, const std::string& dir) {
  {
    std::lock_guard lock(g_message_mu);
    g_last_message.clear();
  }
  if (fuse_session_mount(session.get(), dir.c_str()) != 0) {
    std::string why = last_fuse_message();
    return make_error(EIO, ErrorKind::kIo, "cannot mount: {}",
                      why.empty() ? "fuse_session_mount failed" : why);
  }
  return std::unique_ptr<MountPoint>(new MountPoint(session));
}

MountPoint::~MountPoint() { fuse_session_unmount(session_.get()); }

Result<std::unique_ptr<SignalHandlers>> SignalHandlers::create(Session& session) {
  if (fuse_set_signal_handlers(session.get()) != 0) {
    return make_error(EIO, ErrorKind::kIo, "cannot install signal handlers");
  }
  return std::unique_ptr<SignalHandlers>(new SignalHandlers(session));
}

SignalHandlers::~SignalHandlers() { fuse_remove_signal_handlers(session_.get()); }

}  // namespace vsfs::fuse
