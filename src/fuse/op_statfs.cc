// statfs: real datastore space from Datastore::space(), so `df` is right: f_bavail is
// what writes can still take, less than f_bfree for a datastore in a sparse file whose
// filesystem has less room left. Blocks are 4 KiB grains (f_bsize = f_frsize = 4096). vsfs has no fixed inode table: f_files is
// the live inodes plus one per free grain (each new file needs at least a grain of
// metadata at some point), f_ffree the free grains.
// Threading: any worker thread; space() is synchronous and in memory.
#include <sys/statvfs.h>

#include <cstring>

#include "fuse/ops.h"

namespace vsfs::fuse {

void op_statfs(fuse_req_t req, fuse_ino_t /*ino*/) {
  guarded(req, [&] {
    SpaceInfo sp = fs_of(req).ds().space();
    struct statvfs st;
    std::memset(&st, 0, sizeof(st));
    constexpr uint64_t kUnit = 4096;
    st.f_bsize = kUnit;
    st.f_frsize = kUnit;
    st.f_blocks = sp.total_bytes / kUnit;
    st.f_bfree = sp.free_bytes / kUnit;
    st.f_bavail = sp.available_bytes / kUnit;  // less on a sparse file on a full filesystem
    st.f_files = sp.inodes + st.f_bfree;
    st.f_ffree = st.f_bfree;
    st.f_favail = st.f_ffree;
    st.f_namemax = kNameMaxBytes;
    fuse_reply_statfs(req, &st);
  });
}

}  // namespace vsfs::fuse
