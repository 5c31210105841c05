// A small JSON value, reader and writer: just what the worker bridge's control messages need.
// Internal to the library (not installed).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace modelpod {
namespace json {

class Value {
 public:
  enum class Type { Null, Bool, Int, Double, String, Array, Object };

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : type_(Type::Bool), bool_(b) {}
  Value(int i) : type_(Type::Int), int_(i) {}
  Value(std::int64_t i) : type_(Type::Int), int_(i) {}
  Value(double d) : type_(Type::Double), double_(d) {}
  Value(const char* s) : type_(Type::String), string_(s) {}
  Value(std::string s) : type_(Type::String), string_(std::move(s)) {}

  static Value array() { Value v; v.type_ = Type::Array; return v; }
  static Value object() { Value v; v.type_ = Type::Object; return v; }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_int() const { return type_ == Type::Int; }
  bool is_number() const { return type_ == Type::Int || type_ == Type::Double; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  bool as_bool() const { return bool_; }
  std::int64_t as_int() const { return int_; }
  double as_double() const { return type_ == Type::Int ? static_cast<double>(int_) : double_; }
  const std::string& as_string() const { return string_; }
  const std::vector<Value>& items() const { return items_; }
  const std::vector<std::pair<std::string, Value>>& members() const { return members_; }

  // Array / object building.
  Value& push(Value v) { items_.push_back(std::move(v)); return *this; }
  Value& set(const std::string& key, Value v);
  // The member `key` of an object, or nullptr (also for a non-object).
  const Value* get(const std::string& key) const;

  // Compact JSON text. Error if a string is not valid UTF-8.
  std::string dump() const;

 private:
  void dump_to(std::string& out) const;

  Type type_ = Type::Null;
  bool bool_ = false;
  std::int64_t int_ = 0;
  double double_ = 0;
  std::string string_;
  std::vector<Value> items_;
  std::vector<std::pair<std::string, Value>> members_;
};

// Parse one JSON document; throws modelpod::Error naming what is wrong.
Value parse(const char* data, std::size_t size);
inline Value parse(const std::string& text) { return parse(text.data(), text.size()); }

// Whether `s` is valid UTF-8 (no overlongs, no surrogates).
bool valid_utf8(const std::string& s);

}  // namespace json
}  // namespace modelpod
