// The C++ end of the worker bridge (docs/worker-protocol.md, version 1): a worker process over a
// Unix socket pair, length-prefixed JSON messages, tensors in POSIX shared memory.
// Internal to the library (not installed).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "json.hpp"
#include "modelpod/modelpod.hpp"

namespace modelpod {
namespace bridge {

constexpr int kBridgeVersion = 1;
constexpr const char* kProtocolName = "modelpod-worker";
constexpr std::uint32_t kMaxMessageBytes = 16u << 20;
constexpr std::size_t kAlign = 64;

// The worker broke the protocol: the request fails and the worker is killed.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// The worker is gone (end of file or a reset on its socket).
class PeerGone : public Error {
 public:
  using Error::Error;
};

// The worker did not answer in time.
class Timeout : public Error {
 public:
  using Error::Error;
};

// "modelpod-<this pid>-"
std::string owned_prefix();
// `n` random hex digits.
std::string random_hex(int n);

// A segment this process creates and unlinks, named <prefix><random>, grown (doubled) as needed.
class OwnedSegment {
 public:
  explicit OwnedSegment(std::string prefix) : prefix_(std::move(prefix)) {}
  ~OwnedSegment() { release(); }
  OwnedSegment(const OwnedSegment&) = delete;
  OwnedSegment& operator=(const OwnedSegment&) = delete;

  // A mapping of at least `size` bytes.
  unsigned char* ensure(std::size_t size);
  const std::string& name() const { return name_; }
  void release();

 private:
  std::string prefix_;
  std::string name_;
  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

// A segment the worker owns, attached read-only by name (re-attached when the name changes).
class AttachedSegment {
 public:
  AttachedSegment() = default;
  ~AttachedSegment() { close(); }
  AttachedSegment(const AttachedSegment&) = delete;
  AttachedSegment& operator=(const AttachedSegment&) = delete;

  // Map `name`; ProtocolError if it cannot be.
  void attach(const std::string& name);
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }
  void close();

 private:
  std::string name_;
  unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

// Unlink every segment whose name starts with `prefix` (what a dead worker left in /dev/shm).
void remove_segments(const std::string& prefix);

// One running worker program.
class WorkerProcess {
 public:
  // Start `argv` (argv[0] a path) with the socket's fd appended as --fd N, SIGINT/SIGTERM blocked
  // in the child; its stderr is forwarded to ours, keeping a tail. Throws Error if it cannot fork
  // or exec (the message: strerror of the exec).
  WorkerProcess(const std::vector<std::string>& argv, const std::string& label);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Whether the process still runs (reaps it if not).
  bool alive();
  // "exit code 1", "killed by signal 9" (waits up to `wait_s` for it to end), or "still running".
  std::string exit_description(double wait_s);
  // The last lines the worker wrote to stderr (waits briefly for the pipe to drain).
  std::string stderr_tail(std::size_t max_chars = 2000);

  void send(const json::Value& message);
  // One message; PeerGone at end of file, ProtocolError for garbage, Error on timeout
  // (timeout_s < 0: wait forever).
  json::Value recv(double timeout_s);

  // Ask it to stop (`stop` message), wait up to `wait_s`, then SIGKILL; reap it.
  void stop(double wait_s);
  // SIGKILL and reap.
  void kill();

 private:
  void read_exact(unsigned char* into, std::size_t n, double timeout_s);
  void forward_stderr();
  bool reap(int options);

  pid_t pid_ = -1;
  int sock_ = -1;
  int err_fd_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::thread err_thread_;
  std::atomic<bool> err_stop_{false};
  std::atomic<bool> err_done_{false};
  std::mutex tail_mutex_;
  std::string tail_;
};

}  // namespace bridge
}  // namespace modelpod
