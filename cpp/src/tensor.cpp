// Tensors, dtypes and specs.
#include <cstring>
#include <limits>

#include "json.hpp"
#include "modelpod/modelpod.hpp"

namespace modelpod {

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  std::size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {DType::Bool, "bool", 1},       {DType::Int8, "int8", 1},         {DType::Int16, "int16", 2},
    {DType::Int32, "int32", 4},     {DType::Int64, "int64", 8},       {DType::UInt8, "uint8", 1},
    {DType::UInt16, "uint16", 2},   {DType::UInt32, "uint32", 4},     {DType::UInt64, "uint64", 8},
    {DType::Float16, "float16", 2}, {DType::BFloat16, "bfloat16", 2}, {DType::Float32, "float32", 4},
    {DType::Float64, "float64", 8}, {DType::String, "string", 0},
};

const DTypeInfo& info(DType dtype) {
  for (const auto& entry : kDTypes) {
    if (entry.dtype == dtype) return entry;
  }
  throw Error("modelpod: unknown dtype");
}

constexpr std::int64_t kMaxDim = std::int64_t(1) << 48;

std::int64_t count_of(const Shape& shape) {
  std::int64_t count = 1;
  for (std::int64_t d : shape) {
    if (d < 0 || d > kMaxDim) throw Error("modelpod: tensor dims must be from 0 to 2**48, got " + std::to_string(d));
    if (d != 0 && count > kMaxDim / d) throw Error("modelpod: tensor shape is too large");
    count *= d;
  }
  return count;
}

std::string shape_text(const std::vector<std::string>& dims) {
  std::string out = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) out += ", ";
    out += dims[i];
  }
  return out + (dims.size() == 1 ? ",)" : ")");
}

}  // namespace

const char* dtype_name(DType dtype) { return info(dtype).name; }

std::size_t dtype_size(DType dtype) { return info(dtype).size; }

DType dtype_from_name(const std::string& name) {
  for (const auto& entry : kDTypes) {
    if (name == entry.name) return entry.dtype;
  }
  throw Error("modelpod: unknown dtype '" + name + "'");
}

Tensor::Tensor() = default;

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t;
  t.count_ = count_of(shape);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  if (dtype == DType::String) {
    t.strings_ = std::make_shared<std::vector<std::string>>(static_cast<std::size_t>(t.count_));
    t.text_ = true;
    return t;
  }
  std::size_t n = static_cast<std::size_t>(t.count_) * dtype_size(dtype);
  t.owned_ = std::shared_ptr<unsigned char>(new unsigned char[n ? n : 1](), std::default_delete<unsigned char[]>());
  t.data_ = t.owned_.get();
  return t;
}

Tensor Tensor::view_bytes(DType dtype, void* data, Shape shape) {
  if (dtype == DType::String) throw Error("modelpod: a string tensor cannot be a view");
  Tensor t;
  t.count_ = count_of(shape);
  if (data == nullptr && t.count_ != 0) throw Error("modelpod: Tensor::view of a null pointer");
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.view_ = true;
  t.data_ = static_cast<unsigned char*>(data);
  return t;
}

static Tensor string_tensor(std::vector<std::string> values, Shape shape, bool text) {
  if (shape.empty()) shape = {static_cast<std::int64_t>(values.size())};
  Tensor t = Tensor::zeros(DType::String, shape);
  if (t.size() != static_cast<std::int64_t>(values.size())) {
    throw Error("modelpod: " + std::to_string(values.size()) + " strings do not fill a tensor of " +
                std::to_string(t.size()) + " elements");
  }
  if (text) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!json::valid_utf8(values[i])) {
        throw Error("modelpod: string element " + std::to_string(i) +
                    " is not valid UTF-8 (use Tensor::bytes for raw bytes)");
      }
    }
  }
  const_cast<std::vector<std::string>&>(t.strings()) = std::move(values);
  return t;
}

Tensor Tensor::strings(std::vector<std::string> values, Shape shape) {
  return string_tensor(std::move(values), std::move(shape), true);
}

Tensor Tensor::bytes(std::vector<std::string> values, Shape shape) {
  Tensor t = string_tensor(std::move(values), std::move(shape), false);
  t.text_ = false;
  return t;
}

Tensor::Tensor(std::vector<std::string> values) : Tensor(strings(std::move(values))) {}

std::string Tensor::describe() const {
  std::vector<std::string> dims;
  for (std::int64_t d : shape_) dims.push_back(std::to_string(d));
  return std::string(dtype_name(dtype_)) + " of shape " + shape_text(dims);
}

void* Tensor::checked(DType want) {
  if (want != dtype_) {
    throw Error(std::string("modelpod: data<") + dtype_name(want) + ">() of a " + describe() +
                " tensor (read it as " + dtype_name(dtype_) + ")");
  }
  return data_;
}

void* Tensor::raw_data() {
  if (dtype_ == DType::String) throw Error("modelpod: raw_data() of a string tensor (use strings())");
  return data_;
}

const void* Tensor::raw_data() const { return const_cast<Tensor*>(this)->raw_data(); }

const std::vector<std::string>& Tensor::strings() const {
  if (dtype_ != DType::String) {
    throw Error(std::string("modelpod: strings() of a ") + describe() + " tensor");
  }
  return *strings_;
}

void Tensor::fill_from(const void* src, std::size_t n) {
  if (n) std::memcpy(data_, src, n);
}

Tensor Tensor::clone() const {
  if (dtype_ == DType::String) {
    Tensor t = *this;
    t.strings_ = std::make_shared<std::vector<std::string>>(*strings_);
    return t;
  }
  Tensor t = zeros(dtype_, shape_);
  t.fill_from(data_, nbytes());
  return t;
}

std::string Dim::str() const {
  if (size >= 0) return std::to_string(size);
  return symbol.empty() ? "None" : symbol;
}

std::string TensorSpec::describe() const {
  std::vector<std::string> text;
  for (const Dim& d : dims) text.push_back(d.str());
  return std::string(dtype_name(dtype)) + " of shape " + shape_text(text);
}

}  // namespace modelpod
