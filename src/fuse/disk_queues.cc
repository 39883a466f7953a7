// The per-disk coalescing queues of a mount: see disk_queues.h.
#include "fuse/disk_queues.h"

namespace vsfs::fuse {

DiskQueues::DiskQueues(Datastore& ds, const io::CoalesceOptions& options, BufferPool& buffers)
    : buffers_(buffers), ds_(ds), options_(options) {
  if (options_.enabled) timer_ = std::make_unique<io::CoalesceTimer>();
}

DiskQueues::~DiskQueues() {
  // Handles still open at unmount: send what their queues hold.
  std::lock_guard l(mu_);
  for (auto& [ino, e] : queues_) e.queue->kick();
  queues_.clear();
}

io::CoalesceQueue* DiskQueues::open(Ino ino) {
  if (!options_.enabled) return nullptr;
  std::lock_guard l(mu_);
  auto it = queues_.find(ino);
  if (it == queues_.end()) {
    auto q = io::CoalesceQueue::create(std::make_unique<io::DatastoreDisk>(ds_, ino), options_,
                                       &stats_, timer_.get(), &buffers_);
    it = queues_.emplace(ino, Entry{std::move(q), 0}).first;
  }
  ++it->second.refs;
  return it->second.queue.get();
}

void DiskQueues::release(Ino ino) {
  std::shared_ptr<io::CoalesceQueue> last;
  {
    std::lock_guard l(mu_);
    auto it = queues_.find(ino);
    if (it == queues_.end()) return;
    if (--it->second.refs > 0) return;
    last = std::move(it->second.queue);
    queues_.erase(it);
  }
  // Nothing more can arrive on this disk's handles; what is held goes now, and the IOs
  // in flight keep the queue until they complete.
  last->kick();
}

size_t DiskQueues::open_disks() const {
  std::lock_guard l(mu_);
  return queues_.size();
}

}  // namespace vsfs::fuse
