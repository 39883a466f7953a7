// MetaMutex: the mutex of MetaStore (MetaStore::mu()), and the one place where the
// metadata cache is trimmed to its budget: when the mutex is released.
//
// Callers keep CachedBlock pointers, and pointers into cached blocks (an InodeRecord, a
// parent node during a tree walk), only while they hold the mutex. Trimming at release
// therefore never takes a block from under anyone, and no method of MetaStore has to
// think about eviction. The check is one comparison; a trim, when over budget, evicts
// what was loaded since the last one (MetaCache::trim).
//
// It is a Lockable: std::lock_guard, std::unique_lock and std::condition_variable_any
// work with it (a wait releases it, and so may trim). Thread-safety: as std::mutex.
#pragma once

#include <mutex>

#include "meta/meta_cache.h"

namespace vsfs::meta {

class MetaMutex {
 public:
  explicit MetaMutex(MetaCache& cache) : cache_(cache) {}
  MetaMutex(const MetaMutex&) = delete;
  MetaMutex& operator=(const MetaMutex&) = delete;

  void lock() { mu_.lock(); }
  bool try_lock() { return mu_.try_lock(); }
  void unlock() {
    if (cache_.over_budget()) cache_.trim();
    mu_.unlock();
  }

 private:
  std::mutex mu_;
  MetaCache& cache_;  // guarded by mu_
};

}  // namespace vsfs::meta
