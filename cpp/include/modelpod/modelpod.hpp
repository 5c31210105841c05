// modelpod for C++: load any modelpod package and run it with the same infer() as Python.
//
//   #include <modelpod/modelpod.hpp>
//
//   modelpod::Model model("addition.modelpod");          // a package folder or archive
//   auto x = modelpod::Tensor::zeros<float>({4});
//   std::vector<float> y_data = {5, 6, 7, 8};
//   auto y = modelpod::Tensor::view<float>(y_data.data(), {4});
//   modelpod::TensorMap out = model.infer({{"x", x}, {"y", y}});
//   std::vector<float> sum = out.at("out").as<float>();
//
// The model runs in a modelpod worker process (Python, or the package's own environment) that
// this library starts and talks to over the worker bridge (docs/worker-protocol.md): a Unix socket
// for small JSON messages, POSIX shared memory for tensors. Only C++17 and POSIX are needed here.
// See docs/cpp.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace modelpod {

// -- errors ------------------------------------------------------------------------------------

// Every error this library throws. what() carries modelpod's own message (for a request that does
// not fit the spec: the worker's SpecError text, naming the tensor, what was expected and what came).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// The inputs do not fit the model's spec (a wrong dtype, a shape, a symbol, a missing input, an
// unknown output name): the worker's bad_input / too_large. The model keeps running.
class InputError : public Error {
 public:
  using Error::Error;
};

// The model raised, or broke its own output spec (the worker's model_failed).
class ModelError : public Error {
 public:
  using Error::Error;
};

// The worker process died, hung or broke the protocol while running this call. It is gone; the
// next call starts a new one.
class WorkerDiedError : public Error {
 public:
  using Error::Error;
};

// No worker could be started (no interpreter with modelpod, or the package failed to load).
class StartError : public Error {
 public:
  using Error::Error;
};

// -- dtypes ------------------------------------------------------------------------------------

// The spec dtypes (modelpod.spec.DTYPES), by their spec names: bool, int8 ... float64, string.
enum class DType : std::uint8_t {
  Bool, Int8, Int16, Int32, Int64, UInt8, UInt16, UInt32, UInt64,
  Float16, BFloat16, Float32, Float64, String,
};

// "float32", "string"...
const char* dtype_name(DType dtype);
// The spec dtype called `name`; Error for an unknown name.
DType dtype_from_name(const std::string& name);
// Bytes per element (0 for String).
std::size_t dtype_size(DType dtype);

// The C++ type of each dtype (float16 and bfloat16 have none: use Tensor::raw_data()).
template <class T> struct dtype_of;
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };
template <> struct dtype_of<std::int8_t> { static constexpr DType value = DType::Int8; };
template <> struct dtype_of<std::int16_t> { static constexpr DType value = DType::Int16; };
template <> struct dtype_of<std::int32_t> { static constexpr DType value = DType::Int32; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<std::uint8_t> { static constexpr DType value = DType::UInt8; };
template <> struct dtype_of<std::uint16_t> { static constexpr DType value = DType::UInt16; };
template <> struct dtype_of<std::uint32_t> { static constexpr DType value = DType::UInt32; };
template <> struct dtype_of<std::uint64_t> { static constexpr DType value = DType::UInt64; };
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };
template <> struct dtype_of<std::string> { static constexpr DType value = DType::String; };
template <class T> inline constexpr DType dtype_of_v = dtype_of<std::remove_cv_t<T>>::value;

using Shape = std::vector<std::int64_t>;

// -- tensors -----------------------------------------------------------------------------------

// A dense, C-order tensor of one dtype. It either owns its memory (zeros, from, strings, every
// output of infer) or borrows the caller's (view: the caller keeps that memory alive and
// unchanged while the tensor is used). Copies of a Tensor share its data; clone() copies it.
class Tensor {
 public:
  // An empty float32 tensor of shape {0}.
  Tensor();

  // A tensor of `shape` filled with zeros, owning its memory.
  static Tensor zeros(DType dtype, Shape shape);
  template <class T> static Tensor zeros(Shape shape) {
    static_assert(!std::is_same_v<T, std::string>, "use Tensor::strings for string tensors");
    return zeros(dtype_of_v<T>, std::move(shape));
  }

  // A tensor over the caller's `count(shape)` elements at `data` (nothing is copied).
  template <class T> static Tensor view(const T* data, Shape shape) {
    static_assert(!std::is_same_v<std::remove_cv_t<T>, std::string>, "string tensors own their elements");
    return view_bytes(dtype_of_v<T>, const_cast<T*>(data), std::move(shape));
  }
  // A view of raw bytes as `dtype` (for float16 / bfloat16 data, say).
  static Tensor view_bytes(DType dtype, void* data, Shape shape);

  // A tensor owning a copy of `values`; `shape` defaults to {values.size()}.
  template <class T> static Tensor from(const std::vector<T>& values, Shape shape = {}) {
    static_assert(!std::is_same_v<T, std::string>, "use Tensor::strings for string tensors");
    static_assert(!std::is_same_v<T, bool>, "std::vector<bool> is packed: use Tensor::zeros<bool> and data<bool>()");
    if (shape.empty()) shape = {static_cast<std::int64_t>(values.size())};
    Tensor t = zeros(dtype_of_v<T>, std::move(shape));
    t.fill_from(values.data(), values.size() * sizeof(T));
    return t;
  }

  // A string tensor of UTF-8 text (the model sees str); Error if an element is not valid UTF-8.
  static Tensor strings(std::vector<std::string> values, Shape shape = {});
  // A string tensor of raw bytes (the model sees bytes).
  static Tensor bytes(std::vector<std::string> values, Shape shape = {});
  // The same as Tensor::strings(values).
  explicit Tensor(std::vector<std::string> values);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  // The number of elements.
  std::int64_t size() const { return count_; }
  // Bytes of a fixed-size tensor (element count times element size); 0 for strings.
  std::size_t nbytes() const { return count_ * dtype_size(dtype_); }
  bool is_view() const { return view_; }
  // Whether a string tensor holds text (UTF-8) rather than raw bytes.
  bool is_text() const { return text_; }
  // "float32 of shape (4,)", the way modelpod's messages write it.
  std::string describe() const;

  // The elements; Error unless T is this tensor's dtype (data<double>() of a float32 tensor throws).
  template <class T> T* data() {
    static_assert(!std::is_same_v<T, std::string>, "use strings() or as<std::string>() for string tensors");
    return static_cast<T*>(checked(dtype_of_v<T>));
  }
  template <class T> const T* data() const {
    static_assert(!std::is_same_v<T, std::string>, "use strings() or as<std::string>() for string tensors");
    return static_cast<const T*>(const_cast<Tensor*>(this)->checked(dtype_of_v<T>));
  }
  // The bytes of a fixed-size tensor of any dtype; Error for a string tensor.
  void* raw_data();
  const void* raw_data() const;

  // A copy of the elements as a std::vector (as<std::string>() for string tensors).
  template <class T> std::vector<T> as() const {
    if constexpr (std::is_same_v<T, std::string>) {
      return strings();
    } else {
      static_assert(!std::is_same_v<T, bool>, "std::vector<bool> is packed: read data<bool>()");
      const T* p = data<T>();
      return std::vector<T>(p, p + count_);
    }
  }
  // The elements of a string tensor; Error for any other dtype.
  const std::vector<std::string>& strings() const;

  // A tensor owning a copy of this one's data.
  Tensor clone() const;

 private:
  void* checked(DType want);
  void fill_from(const void* src, std::size_t n);

  DType dtype_ = DType::Float32;
  Shape shape_{0};
  std::int64_t count_ = 0;
  bool view_ = false;
  bool text_ = false;
  std::shared_ptr<unsigned char> owned_;             // fixed-size data this tensor owns
  unsigned char* data_ = nullptr;                    // owned_.get() or the caller's memory
  std::shared_ptr<std::vector<std::string>> strings_;  // string elements
};

// Named tensors: infer()'s inputs and outputs.
using TensorMap = std::map<std::string, Tensor>;

// -- specs -------------------------------------------------------------------------------------

// One dim of a spec: a fixed size, a symbol (every use of one symbol in a call has one size), or any.
struct Dim {
  std::int64_t size = -1;  // >= 0: that size; -1: not fixed
  std::string symbol;      // non-empty: a symbol

  bool is_fixed() const { return size >= 0; }
  bool is_symbol() const { return size < 0 && !symbol.empty(); }
  bool is_any() const { return size < 0 && symbol.empty(); }
  // "3", "num_inputs" or "None".
  std::string str() const;
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::Float32;
  std::vector<Dim> dims;
  // "float32 of shape (num_inputs,)".
  std::string describe() const;
};

// -- models ------------------------------------------------------------------------------------

struct ModelOptions {
  // The interpreter that starts the worker; empty: $MODELPOD_PYTHON, else the python3 on PATH
  // (the first one with modelpod installed).
  std::string python;
  // How long starting a worker may take (building a package's environment included).
  double start_timeout_s = 600;
  // Run the package's stored test inputs once when a worker starts.
  bool warm = true;
};

// One loaded package. Calls are thread-safe (one request at a time per model; several models in
// one process run independently). Move-only. The destructor stops the worker.
class Model {
 public:
  explicit Model(const std::string& path, ModelOptions options = ModelOptions());
  ~Model();
  Model(Model&& other) noexcept;
  Model& operator=(Model&& other) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::string& name() const;
  const std::string& platform() const;
  const std::vector<TensorSpec>& inputs() const;
  const std::vector<TensorSpec>& outputs() const;
  // The path the model was loaded from.
  const std::string& path() const;
  // The interpreter that started the running worker.
  const std::string& python() const;

  // Run the model: every output of the default signature.
  TensorMap infer(const TensorMap& inputs);
  // Run the model, returning only the outputs named in `outputs` (InputError for an unknown name).
  TensorMap infer(const TensorMap& inputs, const std::vector<std::string>& outputs);

  // The worker process's pid (-1 when none runs: after it died, until the next call).
  int worker_pid() const;
  // How many workers were started so far (1 after construction; more after restarts).
  int workers_started() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Impl& impl() const;
};

}  // namespace modelpod
