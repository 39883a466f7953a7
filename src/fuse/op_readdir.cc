// opendir, readdir, readdirplus, releasedir.
//
// opendir takes a snapshot of the directory's entries (Datastore::readdir) into the
// handle, with "." and ".." first and, in the root, the synthetic `.vsfs` last; readdir
// offsets are indexes into that snapshot, so a directory changed while it is being read
// neither repeats nor skips the entries that stayed. readdirplus adds each entry's
// attributes (an entry removed since opendir is skipped); "." and ".." carry no
// attributes (inode 0), so the kernel does not link them.
// Threading: any worker thread; a handle is used by one reader at a time (the kernel
// serialises readdir on an open directory). FuseFs::dir_handles() owns every handle:
// releasedir frees it, and one still open when the session ends goes with the FuseFs.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuse/ops.h"

namespace vsfs::fuse {
namespace {

Result<std::unique_ptr<DirHandle>> open_dir(FuseFs& fs, Ino ino) {
  auto h = std::make_unique<DirHandle>();
  if (ino == kVsfsDirIno) {
    h->entries.push_back({".", kVsfsDirIno, S_IFDIR});
    h->entries.push_back({"..", kRootIno, S_IFDIR});
    h->entries.push_back({std::string(kStatsName), kStatsIno, S_IFREG});
    h->entries.push_back({std::string(kSnapshotListName), kSnapshotListIno, S_IFREG});
    return h;
  }
  if (is_synthetic(ino)) return errno_error(ENOTDIR, "not a directory");
  VSFS_ASSIGN_OR_RETURN(std::vector<DirEntryInfo> listed, fs.ds().readdir(ino));
  h->entries.reserve(listed.size() + 3);
  h->entries.push_back({".", ino, S_IFDIR});
  // The parent's inode number is not known here (the kernel resolves ".." itself; only
  // `ls -i` shows this number), so ".." names the directory itself.
  h->entries.push_back({"..", ino, S_IFDIR});
  for (auto& e : listed) {
    if (e.name == "." || e.name == "..") continue;
    h->entries.push_back(std::move(e));
  }
  if (ino == kRootIno) h->entries.push_back({std::string(kVsfsDirName), kVsfsDirIno, S_IFDIR});
  return h;
}

void do_readdir(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  FuseFs& fs = fs_of(req);
  const DirHandle* h = HandleTable<DirHandle>::get(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = off < 0 ? 0 : static_cast<size_t>(off); i < h->entries.size(); ++i) {
    const DirEntryInfo& e = h->entries[i];
    auto next = static_cast<off_t>(i + 1);
    size_t n = 0;
    if (plus) {
      fuse_entry_param ep;
      std::memset(&ep, 0, sizeof(ep));
      if (e.name == "." || e.name == "..") {
        ep.attr.st_ino = e.ino;
        ep.attr.st_mode = e.mode;
      } else {
        Result<Attr> attr = is_synthetic(e.ino) ? synthetic_attr(fs, e.ino) : fs.ds().getattr(e.ino);
        if (!attr.ok()) continue;  // removed since opendir
        ep = make_entry(fs, *attr);
      }
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, e.name.c_str(), &ep, next);
    } else {
      struct stat st;
      std::memset(&st, 0, sizeof(st));
      st.st_ino = e.ino;
      st.st_mode = e.mode;
      n = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st, next);
    }
    if (n > size - used) break;  // does not fit: the next call starts here
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

}  // namespace

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&] {
    FuseFs& fs = fs_of(req);
    Result<std::unique_ptr<DirHandle>> h = open_dir(fs, ino);
    if (!h.ok()) {
      reply_error(req, h.error());
      return;
    }
    fi->fh = fs.dir_handles().add(std::move(*h));
    // Not delivered (the request was interrupted, or the connection is gone): no
    // releasedir will come for it.
    if (fuse_reply_open(req, fi) != 0) fs.dir_handles().remove(fi->fh);
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, [&] { do_readdir(req, size, off, fi, /*plus=*/false); });
}

void op_readdirplus(fuse_req_t req, fuse_ino_t /*ino*/, size_t size, off_t off,
                    fuse_file_info* fi) {
  guarded(req, [&] { do_readdir(req, size, off, fi, /*plus=*/true); });
}

void op_releasedir(fuse_req_t req, fuse_ino_t /*ino*/, fuse_file_info* fi) {
  fs_of(req).dir_handles().remove(fi->fh);
  fuse_reply_err(req, 0);
}

}  // namespace vsfs::fuse
