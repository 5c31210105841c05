// A minimal test harness: TEST_CASE(name) { CHECK(...); CHECK_THROWS_AS(expr, Type, "needle"...); }
// The binary runs the cases named on its command line (all when none; --list prints them) and
// exits non-zero if any check failed. ctest registers one test per case (tests/CMakeLists.txt).
#pragma once

#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace harness {

struct Failure {
  std::string message;
};

inline std::map<std::string, std::function<void()>>& registry() {
  static std::map<std::string, std::function<void()>> cases;
  return cases;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry()[name] = std::move(fn); }
};

inline int& failures() {
  static int count = 0;
  return count;
}

inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  std::cerr << file << ":" << line << ": FAILED: " << what << "\n";
}

inline bool contains_all(const std::string& text, std::initializer_list<const char*> needles, std::string& missing) {
  for (const char* n : needles) {
    if (text.find(n) == std::string::npos) {
      missing = n;
      return false;
    }
  }
  return true;
}

inline int main(int argc, char** argv) {
  std::vector<std::string> names;
  for (int i = 1; i < argc; ++i) names.push_back(argv[i]);
  if (names.size() == 1 && names[0] == "--list") {
    for (const auto& [name, fn] : registry()) std::cout << name << "\n";
    return 0;
  }
  if (names.empty()) {
    for (const auto& [name, fn] : registry()) names.push_back(name);
  }
  int failed_cases = 0;
  for (const auto& name : names) {
    auto it = registry().find(name);
    if (it == registry().end()) {
      std::cerr << "no test case named '" << name << "'\n";
      return 2;
    }
    int before = failures();
    std::cout << "[ RUN  ] " << name << std::endl;
    try {
      it->second();
    } catch (const Failure& f) {
      ++failures();
      std::cerr << "FAILED: " << f.message << "\n";
    } catch (const std::exception& e) {
      ++failures();
      std::cerr << "FAILED: unexpected exception: " << e.what() << "\n";
    }
    bool ok = failures() == before;
    failed_cases += !ok;
    std::cout << (ok ? "[  OK  ] " : "[ FAIL ] ") << name << std::endl;
  }
  return failed_cases ? 1 : 0;
}

}  // namespace harness

#define HARNESS_CAT2(a, b) a##b
#define HARNESS_CAT(a, b) HARNESS_CAT2(a, b)
#define TEST_CASE(name)                                                               \
  static void HARNESS_CAT(test_, name)();                                            \
  static harness::Register HARNESS_CAT(register_, name)(#name, HARNESS_CAT(test_, name)); \
  static void HARNESS_CAT(test_, name)()

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) harness::fail(__FILE__, __LINE__, "CHECK(" #cond ")"); \
  } while (0)

#define REQUIRE(cond)                                                                          \
  do {                                                                                         \
    if (!(cond)) throw harness::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                                        ": REQUIRE(" #cond ")"};                               \
  } while (0)

#define CHECK_EQ(a, b)                                                                      \
  do {                                                                                      \
    auto&& _a = (a);                                                                        \
    auto&& _b = (b);                                                                        \
    if (!(_a == _b)) {                                                                      \
      std::ostringstream _s;                                                                \
      _s << "CHECK_EQ(" #a ", " #b "): " << _a << " != " << _b;                             \
      harness::fail(__FILE__, __LINE__, _s.str());                                          \
    }                                                                                       \
  } while (0)

// The expression throws `type` (or a subclass) whose what() contains every needle.
#define CHECK_THROWS_AS(expr, type, ...)                                                           \
  do {                                                                                             \
    bool _thrown = false;                                                                          \
    try {                                                                                          \
      (void)(expr);                                                                                \
    } catch (const type& _e) {                                                                     \
      _thrown = true;                                                                              \
      std::string _missing;                                                                        \
      if (!harness::contains_all(_e.what(), {__VA_ARGS__}, _missing))                              \
        harness::fail(__FILE__, __LINE__, std::string(#expr " threw '") + _e.what() +               \
                                              "' without '" + _missing + "'");                     \
    } catch (const std::exception& _e) {                                                           \
      _thrown = true;                                                                              \
      harness::fail(__FILE__, __LINE__, std::string(#expr " threw another type: ") + _e.what());   \
    }                                                                                              \
    if (!_thrown) harness::fail(__FILE__, __LINE__, #expr " did not throw " #type);               \
  } while (0)
