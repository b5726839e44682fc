// Mutex with clang thread-safety annotations, so GUARDED_BY fields are checked
// at compile time under clang (-Wthread-safety). Under gcc the macros vanish.
#ifndef TIDEMAP_BASE_MUTEX_H_
#define TIDEMAP_BASE_MUTEX_H_

#include <chrono>
#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define TIDEMAP_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define TIDEMAP_THREAD_ANNOTATION_(x)
#endif

#define TIDEMAP_CAPABILITY(x) TIDEMAP_THREAD_ANNOTATION_(capability(x))
#define TIDEMAP_SCOPED_CAPABILITY TIDEMAP_THREAD_ANNOTATION_(scoped_lockable)
#define TIDEMAP_GUARDED_BY(x) TIDEMAP_THREAD_ANNOTATION_(guarded_by(x))
#define TIDEMAP_REQUIRES(...) TIDEMAP_THREAD_ANNOTATION_(requires_capability(__VA_ARGS__))
#define TIDEMAP_EXCLUDES(...) TIDEMAP_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))
#define TIDEMAP_ACQUIRE(...) TIDEMAP_THREAD_ANNOTATION_(acquire_capability(__VA_ARGS__))
#define TIDEMAP_RELEASE(...) TIDEMAP_THREAD_ANNOTATION_(release_capability(__VA_ARGS__))
// For the rare function whose locking the analysis cannot follow; say why where used.
#define TIDEMAP_NO_THREAD_SAFETY_ANALYSIS TIDEMAP_THREAD_ANNOTATION_(no_thread_safety_analysis)

namespace tidemap {

class TIDEMAP_CAPABILITY("mutex") Mutex {
 public:
  void Lock() TIDEMAP_ACQUIRE() { mu_.lock(); }
  void Unlock() TIDEMAP_RELEASE() { mu_.unlock(); }
  std::mutex& native() { return mu_; }

 private:
  std::mutex mu_;
};

class TIDEMAP_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) TIDEMAP_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() TIDEMAP_RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* mu_;
};

// Bound to a Mutex that Wait and WaitUntil require held; unannotated: clang cannot name it.
class CondVar {
 public:
  explicit CondVar(Mutex* mu) : mu_(mu) {}
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_->native(), std::adopt_lock);
    cv_.wait(lock);
    lock.release();
  }
  // Waits until signalled or `deadline` passed (spurious wake-ups too).
  // Returns false once the deadline passed.
  bool WaitUntil(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_->native(), std::adopt_lock);
    const bool signalled = cv_.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return signalled;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  Mutex* mu_;
  std::condition_variable cv_;
};

}  // namespace tidemap

#endif  // TIDEMAP_BASE_MUTEX_H_
