// modelpod::Model: a package loaded in a worker process, called over the worker bridge.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>

#include "bridge.hpp"
#include "json.hpp"
#include "modelpod/modelpod.hpp"

namespace modelpod {

namespace {

namespace fs = std::filesystem;
using json::Value;

constexpr std::int64_t kMaxDim = std::int64_t(1) << 48;

struct V2Name {
  DType dtype;
  const char* name;
};

constexpr V2Name kV2[] = {
    {DType::Bool, "BOOL"},     {DType::UInt8, "UINT8"},   {DType::UInt16, "UINT16"}, {DType::UInt32, "UINT32"},
    {DType::UInt64, "UINT64"}, {DType::Int8, "INT8"},     {DType::Int16, "INT16"},   {DType::Int32, "INT32"},
    {DType::Int64, "INT64"},   {DType::Float16, "FP16"},  {DType::BFloat16, "BF16"}, {DType::Float32, "FP32"},
    {DType::Float64, "FP64"},  {DType::String, "BYTES"},
};

const char* v2_name(DType dtype) {
  for (const auto& entry : kV2) {
    if (entry.dtype == dtype) return entry.name;
  }
  throw Error("modelpod: unknown dtype");
}

bool v2_dtype(const std::string& name, DType& out) {
  for (const auto& entry : kV2) {
    if (name == entry.name) {
      out = entry.dtype;
      return true;
    }
  }
  return false;
}

std::size_t round_up(std::size_t n) { return (n + bridge::kAlign - 1) / bridge::kAlign * bridge::kAlign; }

std::string string_member(const Value& message, const char* key, const std::string& otherwise = "") {
  const Value* v = message.get(key);
  return v != nullptr && v->is_string() ? v->as_string() : otherwise;
}

bool executable_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// The interpreters to try, in order, with where each came from.
std::vector<std::string> interpreters(const ModelOptions& options, std::string& rule) {
  std::string named = options.python;
  rule = "ModelOptions::python";
  if (named.empty()) {
    const char* env = std::getenv("MODELPOD_PYTHON");
    if (env != nullptr && *env) {
      named = env;
      rule = "MODELPOD_PYTHON";
    }
  }
  const char* path_env = std::getenv("PATH");
  std::vector<std::string> dirs;
  std::string path = path_env ? path_env : "";
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    dirs.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  auto on_path = [&](const std::string& program, bool all) {
    std::vector<std::string> found;
    std::set<std::string> seen;
    for (const auto& dir : dirs) {
      std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + program;
      if (executable_file(candidate) && seen.insert(candidate).second) {
        found.push_back(candidate);
        if (!all) break;
      }
    }
    return found;
  };
  if (!named.empty()) {
    if (named.find('/') != std::string::npos) return {named};
    auto found = on_path(named, false);
    return found.empty() ? std::vector<std::string>{named} : found;  // a missing one fails at exec, named
  }
  rule = "PATH";
  return on_path("python3", true);
}

std::vector<TensorSpec> parse_specs(const Value* list) {
  if (list == nullptr || !list->is_array()) {
    throw Error("its ready message lists no inputs/outputs (a modelpod older than this library: upgrade it)");
  }
  std::vector<TensorSpec> specs;
  for (const Value& item : list->items()) {
    TensorSpec spec;
    spec.name = string_member(item, "name");
    spec.dtype = dtype_from_name(string_member(item, "dtype"));
    const Value* shape = item.get("shape");
    if (shape == nullptr || !shape->is_array()) throw Error("a spec without a shape in its ready message");
    for (const Value& d : shape->items()) {
      Dim dim;
      if (d.is_int()) dim.size = d.as_int();
      else if (d.is_string()) dim.symbol = d.as_string();
      // null: any size
      spec.dims.push_back(dim);
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

std::uint32_t read_u32(const unsigned char* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) | (std::uint32_t(p[3]) << 24);
}

void write_u32(unsigned char* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>((v >> (8 * i)) & 0xFF);
}

// The tensors a result describes, copied out of the worker's segment; ProtocolError for anything
// that does not fit it (checked before touching memory or allocating).
TensorMap read_outputs(const Value& outputs, const bridge::AttachedSegment& segment) {
  using bridge::ProtocolError;
  if (!outputs.is_array()) throw ProtocolError("'outputs' is not a list of tensor entries");
  TensorMap out;
  const std::size_t limit = segment.size();
  for (const Value& entry : outputs.items()) {
    if (!entry.is_object()) throw ProtocolError("a tensor entry is not an object");
    const Value* name_v = entry.get("name");
    const Value* datatype_v = entry.get("datatype");
    DType dtype;
    if (name_v == nullptr || !name_v->is_string() || datatype_v == nullptr || !datatype_v->is_string() ||
        !v2_dtype(datatype_v->as_string(), dtype)) {
      throw ProtocolError("tensor entry " + entry.dump().substr(0, 200) + " has no name or an unknown datatype");
    }
    const std::string& name = name_v->as_string();
    const Value* shape_v = entry.get("shape");
    if (shape_v == nullptr || !shape_v->is_array()) throw ProtocolError("tensor '" + name + "': no shape");
    Shape shape;
    std::int64_t nonzero = 1, count = 1;
    for (const Value& d : shape_v->items()) {
      if (!d.is_int() || d.as_int() < 0 || d.as_int() > kMaxDim) {
        throw ProtocolError("tensor '" + name + "': shape must be a list of ints from 0 to 2**48");
      }
      std::int64_t dim = d.as_int();
      if (dim != 0) {
        if (nonzero > kMaxDim / dim) throw ProtocolError("tensor '" + name + "': shape is too large");
        nonzero *= dim;
      }
      count = dim == 0 ? 0 : count * dim;
      shape.push_back(dim);
    }
    const Value* offset_v = entry.get("offset");
    const Value* nbytes_v = entry.get("nbytes");
    if (offset_v == nullptr || nbytes_v == nullptr || !offset_v->is_int() || !nbytes_v->is_int() ||
        offset_v->as_int() < 0 || nbytes_v->as_int() < 0 ||
        static_cast<std::uint64_t>(offset_v->as_int()) > limit ||
        static_cast<std::uint64_t>(nbytes_v->as_int()) > limit - static_cast<std::size_t>(offset_v->as_int())) {
      throw ProtocolError("tensor '" + name + "': its bytes lie outside the segment (" + std::to_string(limit) +
                          " bytes)");
    }
    std::size_t offset = static_cast<std::size_t>(offset_v->as_int());
    std::size_t nbytes = static_cast<std::size_t>(nbytes_v->as_int());
    const unsigned char* base = segment.data() + offset;
    if (out.count(name)) throw ProtocolError("tensor '" + name + "' appears twice");
    if (dtype == DType::String) {
      if (static_cast<std::uint64_t>(count) * 4 > nbytes) {
        throw ProtocolError("tensor '" + name + "': " + std::to_string(nbytes) + " bytes cannot hold " +
                            std::to_string(count) + " BYTES elements");
      }
      const Value* text_v = entry.get("text");
      bool text = text_v != nullptr && text_v->is_bool() && text_v->as_bool();
      std::vector<std::string> elements;
      elements.reserve(static_cast<std::size_t>(count));
      std::size_t pos = 0;
      for (std::int64_t i = 0; i < count; ++i) {
        if (pos + 4 > nbytes) throw ProtocolError("tensor '" + name + "': BYTES data ends early");
        std::uint32_t len = read_u32(base + pos);
        pos += 4;
        if (len > nbytes - pos) throw ProtocolError("tensor '" + name + "': an element runs past its bytes");
        elements.emplace_back(reinterpret_cast<const char*>(base + pos), len);
        pos += len;
        if (text && !json::valid_utf8(elements.back())) {
          throw ProtocolError("tensor '" + name + "': element " + std::to_string(i) + " is not UTF-8");
        }
      }
      out.emplace(name, text ? Tensor::strings(std::move(elements), shape) : Tensor::bytes(std::move(elements), shape));
      continue;
    }
    if (static_cast<std::uint64_t>(count) * dtype_size(dtype) != nbytes) {
      throw ProtocolError("tensor '" + name + "': " + std::to_string(nbytes) + " bytes do not make a " +
                          datatype_v->as_string() + " tensor of " + std::to_string(count) + " elements");
    }
    Tensor t = Tensor::zeros(dtype, shape);
    if (nbytes) std::memcpy(t.raw_data(), base, nbytes);
    if (dtype == DType::Bool) {  // a C++ bool must be 0 or 1
      auto* p = static_cast<unsigned char*>(t.raw_data());
      for (std::size_t i = 0; i < nbytes; ++i) p[i] = p[i] != 0;
    }
    out.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace

struct Model::Impl {
  std::string path;
  ModelOptions options;
  std::mutex mutex;
  std::string name, platform, python;
  std::vector<TensorSpec> inputs, outputs;
  std::unique_ptr<bridge::WorkerProcess> worker;
  std::string worker_prefix;
  bridge::OwnedSegment request{bridge::owned_prefix()};
  bridge::AttachedSegment answer;
  std::int64_t sequence = 0;
  std::atomic<int> pid{-1};
  std::atomic<int> started{0};

  std::string label() const { return "model '" + (name.empty() ? path : name) + "'"; }

  // Start a worker: each interpreter the rule gives until one greets; StartError if none does or
  // the package fails to load.
  void start() {
    std::string rule;
    std::vector<std::string> candidates = interpreters(options, rule);
    if (candidates.empty()) {
      throw StartError("modelpod: could not start a worker for '" + path +
                       "': no python3 on PATH (set MODELPOD_PYTHON to a Python with modelpod installed)");
    }
    std::string tried;
    for (const auto& python_path : candidates) {
      std::string why;
      if (try_start(python_path, why)) {
        python = python_path;
        return;
      }
      tried += (tried.empty() ? "tried " : "; tried ") + python_path + " (" + why + ")";
    }
    throw StartError("modelpod: could not start a worker for '" + path + "': " + tried + " [the interpreter comes from " +
                     rule + "; set MODELPOD_PYTHON to a Python with modelpod installed]");
  }

  // False (with `why`) when this interpreter cannot run a modelpod worker; StartError when it can
  // but the package does not load.
  bool try_start(const std::string& python_path, std::string& why) {
    std::string prefix = bridge::owned_prefix() + "w" + bridge::random_hex(6) + "-";
    std::unique_ptr<bridge::WorkerProcess> w;
    try {
      w = std::make_unique<bridge::WorkerProcess>(
          std::vector<std::string>{python_path, "-m", "modelpod.runtime.launch", path}, label() + " (C++)");
    } catch (const Error& e) {
      why = e.what();
      return false;
    }
    Value hello;
    try {
      hello = w->recv(options.start_timeout_s);
    } catch (const bridge::PeerGone&) {
      std::string status = w->exit_description(5);
      std::string tail = w->stderr_tail(600);
      auto nl = tail.rfind('\n');
      why = status + (tail.empty() ? "" : ": " + (nl == std::string::npos ? tail : tail.substr(nl + 1)));
      w->kill();
      return false;
    } catch (const bridge::Timeout&) {
      w->kill();
      why = "no hello in " + std::to_string(static_cast<int>(options.start_timeout_s)) + " s";
      return false;
    } catch (const Error& e) {
      w->kill();
      why = std::string("it did not greet with a modelpod-worker hello: ") + e.what();
      return false;
    }
    if (string_member(hello, "kind") != "hello" || string_member(hello, "protocol") != bridge::kProtocolName) {
      w->kill();
      why = "it did not greet with a modelpod-worker hello (got " + hello.dump().substr(0, 200) + ")";
      return false;
    }
    const Value* version = hello.get("bridge");
    if (version == nullptr || !version->is_int() || version->as_int() != bridge::kBridgeVersion) {
      why = "its modelpod speaks worker bridge version " + (version ? version->dump() : std::string("?")) +
            "; this library speaks version " + std::to_string(bridge::kBridgeVersion);
      Value refused = Value::object();
      refused.set("kind", "refused").set("message", why);
      try {
        w->send(refused);
      } catch (const Error&) {
      }
      w->stop(2);
      return false;
    }
    Value load = Value::object();
    load.set("kind", "load")
        .set("bridge", bridge::kBridgeVersion)
        .set("root", string_member(hello, "package", path))
        .set("name", nullptr)
        .set("hooks", false)
        .set("modelarts", false)
        .set("warm", options.warm)
        .set("keep_freed_memory", false)
        .set("segment_prefix", prefix)
        .set("memory_limit_bytes", nullptr);
    Value ready;
    try {
      w->send(load);
      ready = w->recv(options.start_timeout_s);
    } catch (const bridge::PeerGone&) {
      std::string status = w->exit_description(5);
      std::string tail = w->stderr_tail();
      w->kill();
      bridge::remove_segments(prefix);
      throw StartError("modelpod: " + label() + ": the worker process exited (" + status + ") while loading" +
                       (tail.empty() ? "" : ":\n" + tail));
    } catch (const Error& e) {
      w->kill();
      bridge::remove_segments(prefix);
      throw StartError("modelpod: " + label() + ": the worker failed while loading: " + e.what());
    }
    std::string kind = string_member(ready, "kind");
    if (kind != "ready") {
      w->stop(2);
      bridge::remove_segments(prefix);
      std::string message = kind == "failed" ? string_member(ready, "message") : ready.dump().substr(0, 300);
      throw StartError("modelpod: '" + path + "' failed to load: " + message);
    }
    try {
      auto ins = parse_specs(ready.get("inputs"));
      auto outs = parse_specs(ready.get("outputs"));
      if (started == 0) {  // a restarted worker serves the same package: what callers read stays put
        inputs = std::move(ins);
        outputs = std::move(outs);
        name = string_member(ready, "model");
        platform = string_member(ready, "platform");
      }
    } catch (const Error& e) {
      w->stop(2);
      bridge::remove_segments(prefix);
      throw StartError("modelpod: " + label() + ": the worker (" + string_member(hello, "executable") + "): " +
                       e.what());
    }
    worker = std::move(w);
    worker_prefix = prefix;
    pid = static_cast<int>(worker->pid());
    ++started;
    return true;
  }

  // Stop the worker (asking first when `graceful`), and remove what it left behind.
  void teardown(bool graceful) {
    if (!worker) return;
    pid_t dead = worker->pid();
    if (graceful) worker->stop(5);
    else worker->kill();
    worker.reset();
    pid = -1;
    answer.close();
    bridge::remove_segments(worker_prefix);
    // an archive's extraction: $TMPDIR/modelpod-<worker pid>-* (the worker removes it when it ends well)
    try {
      std::string mark = "modelpod-" + std::to_string(dead) + "-";
      for (const auto& entry : fs::directory_iterator(fs::temp_directory_path())) {
        std::string base = entry.path().filename().string();
        if (base.compare(0, mark.size(), mark) == 0) {
          std::error_code ignored;
          fs::remove_all(entry.path(), ignored);
        }
      }
    } catch (const std::exception&) {
    }
  }

  TensorMap call(const TensorMap& tensors, const std::vector<std::string>* wanted) {
    std::lock_guard<std::mutex> lock(mutex);
    if (worker && !worker->alive()) teardown(false);  // it died between calls
    if (!worker) start();
    // lay the inputs out in our segment (BYTES: u32-LE length + bytes per element)
    Value entries = Value::array();
    std::size_t size = 0;
    std::vector<std::pair<const Tensor*, std::size_t>> placed;
    for (const auto& [tensor_name, tensor] : tensors) {
      std::size_t nbytes = 0;
      if (tensor.dtype() == DType::String) {
        for (const auto& s : tensor.strings()) {
          if (s.size() > 0xFFFFFFFFu) throw InputError("modelpod: input '" + tensor_name + "': an element past 4 GiB");
          nbytes += 4 + s.size();
        }
      } else {
        nbytes = tensor.nbytes();
      }
      Value shape = Value::array();
      for (std::int64_t d : tensor.shape()) shape.push(d);
      Value entry = Value::object();
      entry.set("name", tensor_name)
          .set("datatype", v2_name(tensor.dtype()))
          .set("shape", shape)
          .set("offset", static_cast<std::int64_t>(size))
          .set("nbytes", static_cast<std::int64_t>(nbytes));
      if (tensor.dtype() == DType::String && tensor.is_text()) entry.set("text", true);
      entries.push(std::move(entry));
      placed.emplace_back(&tensor, size);
      size += round_up(nbytes);
    }
    Value message = Value::object();
    Value requested;
    if (wanted != nullptr) {
      requested = Value::array();
      for (const auto& o : *wanted) requested.push(o);
    }
    message.set("kind", "infer").set("id", std::int64_t(0)).set("segment", "").set("inputs", entries)
        .set("outputs", requested).set("signature", nullptr);
    std::string text = message.dump();  // invalid UTF-8 in a name: Error before anything is sent
    unsigned char* buf = request.ensure(size);
    for (const auto& [tensor, offset] : placed) {
      unsigned char* at = buf + offset;
      if (tensor->dtype() == DType::String) {
        for (const auto& s : tensor->strings()) {
          write_u32(at, static_cast<std::uint32_t>(s.size()));
          std::memcpy(at + 4, s.data(), s.size());
          at += 4 + s.size();
        }
      } else if (tensor->nbytes()) {
        std::memcpy(at, tensor->raw_data(), tensor->nbytes());
      }
    }
    message.set("segment", request.name());
    message.set("id", ++sequence);
    try {
      worker->send(message);
    } catch (const bridge::PeerGone&) {  // gone before the request reached it: a new worker takes it
      teardown(false);
      start();
      message.set("id", ++sequence);
      worker->send(message);
    }
    Value reply;
    try {
      reply = worker->recv(-1);
      const Value* id = reply.get("id");
      if (id == nullptr || !id->is_int() || id->as_int() != sequence) {
        throw bridge::ProtocolError("answered request " + (id ? id->dump() : std::string("null")) + " to request " +
                                    std::to_string(sequence));
      }
      std::string kind = string_member(reply, "kind");
      if (kind == "error") return raise(reply);
      if (kind != "result") throw bridge::ProtocolError("answered '" + kind + "' to 'infer'");
      const Value* outs = reply.get("outputs");
      answer.attach(string_member(reply, "segment"));
      return read_outputs(outs ? *outs : Value(), answer);
    } catch (const bridge::PeerGone&) {
      int dead = pid;
      std::string status = worker->exit_description(2);
      teardown(false);
      throw WorkerDiedError("modelpod: " + label() + ": the worker process (pid " + std::to_string(dead) + ") died (" +
                            status + ") while running this request; the next call starts a new one");
    } catch (const bridge::ProtocolError& e) {
      teardown(false);
      throw WorkerDiedError("modelpod: " + label() + ": the worker broke the worker protocol (" + e.what() +
                            "); it was stopped");
    }
  }

  [[noreturn]] TensorMap raise(const Value& reply) {
    std::string kind = string_member(reply, "error", "model_failed");
    std::string message = string_member(reply, "message");
    const Value* exiting = reply.get("exiting");
    if (exiting != nullptr && exiting->is_bool() && exiting->as_bool()) {
      worker->exit_description(10);  // it exits right after this answer (out of memory)
      teardown(false);
    }
    if (kind == "bad_input" || kind == "too_large") throw InputError(message);
    if (kind == "protocol") throw Error("modelpod: " + label() + ": worker bridge: " + message);
    throw ModelError(message);
  }
};

Model::Model(const std::string& path, ModelOptions options) : impl_(std::make_unique<Impl>()) {
  std::error_code ec;
  fs::path absolute = fs::absolute(path, ec);
  impl_->path = ec ? path : absolute.lexically_normal().string();
  impl_->options = std::move(options);
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->start();
}

Model::~Model() {
  if (!impl_) return;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->teardown(true);
  impl_->request.release();
}

Model::Model(Model&& other) noexcept = default;
Model& Model::operator=(Model&& other) noexcept {
  if (this != &other) {
    Model gone(std::move(*this));  // stops this model's worker
    impl_ = std::move(other.impl_);
  }
  return *this;
}

Model::Impl& Model::impl() const {
  if (!impl_) throw Error("modelpod: use of a moved-from Model");
  return *impl_;
}

const std::string& Model::name() const { return impl().name; }
const std::string& Model::platform() const { return impl().platform; }
const std::vector<TensorSpec>& Model::inputs() const { return impl().inputs; }
const std::vector<TensorSpec>& Model::outputs() const { return impl().outputs; }
const std::string& Model::path() const { return impl().path; }
const std::string& Model::python() const { return impl().python; }
int Model::worker_pid() const { return impl().pid; }
int Model::workers_started() const { return impl().started; }

TensorMap Model::infer(const TensorMap& inputs) { return impl().call(inputs, nullptr); }

TensorMap Model::infer(const TensorMap& inputs, const std::vector<std::string>& outputs) {
  return impl().call(inputs, &outputs);
}

}  // namespace modelpod
