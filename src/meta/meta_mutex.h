// MetaMutex: the mutex of MetaStore (MetaStore::mu()), and the one place where the
// metadata cache, and what shares its budget, is trimmed to it: when the mutex is
// released.
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

namespace vsfs::meta {

// What the mutex trims when it is released (MetaStore: its directory indexes, then the
// cache). Both are called with the mutex held.
class Trimmable {
 public:
  virtual bool over_budget() const = 0;
  virtual void trim() = 0;

 protected:
  ~Trimmable() = default;
};

class MetaMutex {
 public:
  explicit MetaMutex(Trimmable& cache) : cache_(cache) {}
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
  Trimmable& cache_;  // guarded by mu_
};

}  // namespace vsfs::meta
