#include "bridge.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>

extern char** environ;

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "modelpod's worker bridge lays tensors out little-endian; this library supports little-endian hosts only"
#endif

namespace modelpod {
namespace bridge {

namespace {

std::string sys_error(const std::string& what) { return what + ": " + std::strerror(errno); }

double now_s() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

constexpr std::size_t kMinSegment = 1 << 20;
constexpr std::size_t kTailBytes = 16 << 10;

}  // namespace

std::string owned_prefix() { return "modelpod-" + std::to_string(::getpid()) + "-"; }

std::string random_hex(int n) {
  static std::mutex mutex;
  static std::mt19937_64 engine{std::random_device{}() ^
                                static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};
  static const char digits[] = "0123456789abcdef";
  std::lock_guard<std::mutex> lock(mutex);
  std::string out;
  for (int i = 0; i < n; ++i) out += digits[engine() & 15];
  return out;
}

// -- segments ------------------------------------------------------------------------------------

unsigned char* OwnedSegment::ensure(std::size_t size) {
  if (data_ != nullptr && size_ >= size) return data_;
  release();
  std::size_t want = size ? std::max(size, kMinSegment) * 2 : kMinSegment;
  while (true) {
    std::string name = prefix_ + random_hex(8);
    int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      throw Error(sys_error("modelpod: cannot create shared memory segment " + name));
    }
    if (::ftruncate(fd, static_cast<off_t>(want)) != 0) {
      std::string message = sys_error("modelpod: cannot size shared memory segment " + name);
      ::close(fd);
      ::shm_unlink(("/" + name).c_str());
      throw Error(message);
    }
    void* p = ::mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) {
      std::string message = sys_error("modelpod: cannot map shared memory segment " + name);
      ::shm_unlink(("/" + name).c_str());
      throw Error(message);
    }
    name_ = name;
    data_ = static_cast<unsigned char*>(p);
    size_ = want;
    return data_;
  }
}

void OwnedSegment::release() {
  if (data_ != nullptr) {
    ::munmap(data_, size_);
    ::shm_unlink(("/" + name_).c_str());
  }
  data_ = nullptr;
  size_ = 0;
  name_.clear();
}

void AttachedSegment::attach(const std::string& name) {
  if (data_ != nullptr && name == name_) return;
  close();
  if (name.empty() || name.size() > 200 || name.find('/') != std::string::npos) {
    throw ProtocolError("the answer names an invalid segment '" + name.substr(0, 200) + "'");
  }
  int fd = ::shm_open(("/" + name).c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) throw ProtocolError(sys_error("the answer names segment '" + name + "', which cannot be opened"));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::string message = sys_error("cannot stat segment '" + name + "'");
    ::close(fd);
    throw ProtocolError(message);
  }
  std::size_t size = static_cast<std::size_t>(st.st_size);
  void* p = nullptr;
  if (size > 0) {
    p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      std::string message = sys_error("cannot map segment '" + name + "'");
      ::close(fd);
      throw ProtocolError(message);
    }
  }
  ::close(fd);
  name_ = name;
  data_ = static_cast<unsigned char*>(p);
  size_ = size;
}

void AttachedSegment::close() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  name_.clear();
}

void remove_segments(const std::string& prefix) {
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return;
  std::vector<std::string> names;
  while (struct dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name.compare(0, prefix.size(), prefix) == 0) names.push_back(name);
  }
  ::closedir(dir);
  for (const auto& name : names) ::shm_unlink(("/" + name).c_str());
}

// -- the process -----------------------------------------------------------------------------------

WorkerProcess::WorkerProcess(const std::vector<std::string>& argv_in, const std::string& label) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw Error(sys_error("socketpair"));
  int errp[2];
  if (::pipe2(errp, O_CLOEXEC) != 0) {
    std::string message = sys_error("pipe");
    ::close(sv[0]);
    ::close(sv[1]);
    throw Error(message);
  }
  int execp[2];
  if (::pipe2(execp, O_CLOEXEC) != 0) {
    std::string message = sys_error("pipe");
    for (int fd : {sv[0], sv[1], errp[0], errp[1]}) ::close(fd);
    throw Error(message);
  }
  // everything the child needs is prepared before fork (after it, only async-signal-safe calls)
  std::vector<std::string> args = argv_in;
  args.push_back("--fd");
  args.push_back(std::to_string(sv[1]));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (std::strncmp(*e, "MODELPOD_WORKER=", 16) != 0) env_strings.emplace_back(*e);
  }
  env_strings.push_back("MODELPOD_WORKER=" + label);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  int child_fd = sv[1];
  int err_write = errp[1];
  int exec_write = execp[1];

  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &block, &old);  // the worker unblocks them once it ignores them
  pid_t pid = ::fork();
  if (pid == 0) {
    if (err_write != STDERR_FILENO) ::dup2(err_write, STDERR_FILENO);  // dup2 leaves fd 2 inheritable
    int flags = ::fcntl(child_fd, F_GETFD);
    ::fcntl(child_fd, F_SETFD, flags & ~FD_CLOEXEC);  // the one descriptor the worker inherits
    ::execve(argv[0], argv.data(), envp.data());
    int e = errno;
    ssize_t ignored = ::write(exec_write, &e, sizeof e);
    (void)ignored;
    ::_exit(127);
  }
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(sv[1]);
  ::close(errp[1]);
  ::close(execp[1]);
  if (pid < 0) {
    for (int fd : {sv[0], errp[0], execp[0]}) ::close(fd);
    throw Error(std::string("fork: ") + std::strerror(fork_errno));
  }
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(execp[0], &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  ::close(execp[0]);
  pid_ = pid;
  sock_ = sv[0];
  err_fd_ = errp[0];
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {  // exec failed: the child wrote why
    reap(0);
    ::close(sock_);
    ::close(err_fd_);
    sock_ = err_fd_ = -1;
    throw Error(std::strerror(exec_errno));
  }
  err_thread_ = std::thread([this] { forward_stderr(); });
}

WorkerProcess::~WorkerProcess() {
  if (!reaped_) kill();
  if (sock_ >= 0) ::close(sock_);
  err_stop_ = true;
  if (err_thread_.joinable()) err_thread_.join();
  if (err_fd_ >= 0) ::close(err_fd_);
}

void WorkerProcess::forward_stderr() {
  char buf[4096];
  while (!err_stop_) {
    struct pollfd pfd = {err_fd_, POLLIN, 0};
    int r = ::poll(&pfd, 1, 100);
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    ssize_t n = ::read(err_fd_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) break;  // end of file: the worker (and whatever it started) closed stderr
    ssize_t ignored = ::write(STDERR_FILENO, buf, static_cast<std::size_t>(n));
    (void)ignored;
    std::lock_guard<std::mutex> lock(tail_mutex_);
    tail_.append(buf, static_cast<std::size_t>(n));
    if (tail_.size() > kTailBytes) tail_.erase(0, tail_.size() - kTailBytes);
  }
  err_done_ = true;
}

std::string WorkerProcess::stderr_tail(std::size_t max_chars) {
  for (int i = 0; i < 100 && !err_done_; ++i) sleep_ms(10);
  std::string tail;
  {
    std::lock_guard<std::mutex> lock(tail_mutex_);
    tail = tail_;
  }
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ' || tail.back() == '\r')) tail.pop_back();
  if (tail.size() > max_chars) {
    tail = tail.substr(tail.size() - max_chars);
    auto nl = tail.find('\n');
    if (nl != std::string::npos) tail = tail.substr(nl + 1);
  }
  return tail;
}

bool WorkerProcess::reap(int options) {
  if (reaped_) return true;
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, options);
    if (r == pid_) {
      reaped_ = true;
      status_ = status;
      return true;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {  // ECHILD: someone else reaped it (SIGCHLD ignored, say)
      reaped_ = true;
      status_ = -1;
      return true;
    }
    return false;
  }
}

bool WorkerProcess::alive() { return !reap(WNOHANG); }

std::string WorkerProcess::exit_description(double wait_s) {
  double deadline = now_s() + wait_s;
  while (!reap(WNOHANG) && now_s() < deadline) sleep_ms(5);
  if (!reaped_) return "still running";
  if (status_ == -1) return "exit status unknown";
  if (WIFEXITED(status_)) return "exit code " + std::to_string(WEXITSTATUS(status_));
  if (WIFSIGNALED(status_)) {
    int sig = WTERMSIG(status_);
    const char* name = ::strsignal(sig);
    return "killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
  }
  return "status " + std::to_string(status_);
}

void WorkerProcess::send(const json::Value& message) {
  std::string body = message.dump();
  if (body.size() > kMaxMessageBytes) throw Error("modelpod: a worker bridge message past 16 MiB");
  std::string frame(4, '\0');
  std::uint32_t n = static_cast<std::uint32_t>(body.size());
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  frame += body;
  std::size_t sent = 0;
  while (sent < frame.size()) {
    ssize_t r = ::send(sock_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) throw PeerGone("the worker is gone");
      throw Error(sys_error("modelpod: writing to the worker"));
    }
    sent += static_cast<std::size_t>(r);
  }
}

void WorkerProcess::read_exact(unsigned char* into, std::size_t n, double timeout_s) {
  double deadline = timeout_s < 0 ? 0 : now_s() + timeout_s;
  std::size_t got = 0;
  while (got < n) {
    int wait_ms = -1;
    if (timeout_s >= 0) {
      double left = deadline - now_s();
      if (left <= 0) throw Timeout("timed out");
      wait_ms = static_cast<int>(left * 1000) + 1;
    }
    struct pollfd pfd = {sock_, POLLIN, 0};
    int r = ::poll(&pfd, 1, wait_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw Error(sys_error("modelpod: poll"));
    }
    if (r == 0) continue;  // the deadline check above throws
    ssize_t k = ::recv(sock_, into + got, n - got, 0);
    if (k == 0) throw PeerGone("end of file");
    if (k < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET) throw PeerGone("connection reset");
      throw Error(sys_error("modelpod: reading from the worker"));
    }
    got += static_cast<std::size_t>(k);
  }
}

json::Value WorkerProcess::recv(double timeout_s) {
  unsigned char head[4];
  read_exact(head, 4, timeout_s);
  std::uint32_t size = std::uint32_t(head[0]) | (std::uint32_t(head[1]) << 8) | (std::uint32_t(head[2]) << 16) |
                       (std::uint32_t(head[3]) << 24);
  if (size > kMaxMessageBytes) {
    throw ProtocolError("a message of " + std::to_string(size) + " bytes (the limit is 16 MiB)");
  }
  std::string body(size, '\0');
  read_exact(reinterpret_cast<unsigned char*>(body.data()), size, timeout_s);
  json::Value message;
  try {
    message = json::parse(body);
  } catch (const Error& e) {
    throw ProtocolError(e.what());
  }
  const json::Value* kind = message.get("kind");
  if (kind == nullptr || !kind->is_string()) throw ProtocolError("a message that is not a JSON object with a 'kind'");
  return message;
}

void WorkerProcess::stop(double wait_s) {
  if (reaped_) return;
  try {
    json::Value stop = json::Value::object();
    stop.set("kind", "stop");
    send(stop);
  } catch (const Error&) {
  }
  double deadline = now_s() + wait_s;
  while (!reap(WNOHANG) && now_s() < deadline) sleep_ms(2);
  if (!reaped_) kill();
}

void WorkerProcess::kill() {
  if (reaped_) return;
  ::kill(pid_, SIGKILL);
  reap(0);
}

}  // namespace bridge
}  // namespace modelpod
