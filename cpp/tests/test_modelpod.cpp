// The C++ API against real packages, packed by tests/cpp/test_cpp.py and named in environment
// variables (MODELPOD_TEST_*); the worker's interpreter is MODELPOD_PYTHON. Run one case with
// `modelpod_tests CASE`, all with no argument.
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <type_traits>

#include "../src/json.hpp"
#include "harness.hpp"
#include "modelpod/modelpod.hpp"

using modelpod::DType;
using modelpod::Model;
using modelpod::Tensor;
using modelpod::TensorMap;

namespace {

std::string package(const char* var) {
  const char* value = std::getenv(var);
  if (value == nullptr || !*value) {
    throw harness::Failure{std::string("environment variable ") + var +
                           " is not set: run these tests through tests/cpp/test_cpp.py, which packs the packages"};
  }
  return value;
}

// Restores an environment variable when it goes out of scope.
struct EnvVar {
  std::string name;
  bool had;
  std::string old;
  EnvVar(const std::string& n, const char* value) : name(n) {
    const char* o = std::getenv(n.c_str());
    had = o != nullptr;
    if (had) old = o;
    if (value) ::setenv(n.c_str(), value, 1);
    else ::unsetenv(n.c_str());
  }
  ~EnvVar() {
    if (had) ::setenv(name.c_str(), old.c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};

TensorMap add(Model& model, std::vector<float> x, std::vector<float> y) {
  return model.infer({{"x", Tensor::from(x)}, {"y", Tensor::from(y)}});
}

void check_addition(Model& model) {
  CHECK_EQ(model.name(), std::string("addition"));
  CHECK_EQ(model.platform(), std::string("python"));
  REQUIRE(model.inputs().size() == 2);
  CHECK_EQ(model.inputs()[0].name, std::string("x"));
  CHECK(model.inputs()[0].dtype == DType::Float32);
  REQUIRE(model.inputs()[0].dims.size() == 1);
  CHECK(model.inputs()[0].dims[0].is_symbol());
  CHECK_EQ(model.inputs()[0].dims[0].symbol, std::string("num_inputs"));
  CHECK_EQ(model.outputs().at(0).describe(), std::string("float32 of shape (num_inputs,)"));
  const float x_data[] = {1, 2, 3, 4};
  auto x = Tensor::view<float>(x_data, {4});
  auto y = Tensor::zeros<float>({4});
  float* yp = y.data<float>();
  for (int i = 0; i < 4; ++i) yp[i] = static_cast<float>(5 + i);
  TensorMap out = model.infer({{"x", x}, {"y", y}});
  REQUIRE(out.size() == 1);
  CHECK(out.at("out").as<float>() == (std::vector<float>{6, 8, 10, 12}));
  CHECK(out.at("out").shape() == (modelpod::Shape{4}));
  CHECK(out.at("out").dtype() == DType::Float32);
  CHECK(!out.at("out").is_view());
}

std::vector<std::string> temp_entries(const std::string& prefix) {
  std::vector<std::string> found;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path())) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) found.push_back(e.path().string());
  }
  return found;
}

std::vector<std::string> shm_entries(const std::string& prefix) {
  std::vector<std::string> found;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) found.push_back(e.path().string());
  }
  return found;
}

bool process_exists(int pid) { return ::kill(pid, 0) == 0; }

// Whether our child `pid` has exited and can be reaped, without reaping it (waitid with WNOWAIT:
// the library still reaps it). /proc's 'Z' is not enough: a multi-threaded process's leader shows
// as a zombie while its other threads are still going, and waitpid does not report it yet.
bool exited(int pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

}  // namespace

// -- no worker needed ------------------------------------------------------------------------------

TEST_CASE(json_reader_and_writer) {
  using modelpod::json::parse;
  auto v = parse(R"({"kind":"hello","n":-12,"f":1.5e3,"ok":true,"none":null,"list":[1,"a\u00e9\n\"",[]],"o":{}})");
  CHECK_EQ(v.get("kind")->as_string(), std::string("hello"));
  CHECK_EQ(v.get("n")->as_int(), -12);
  CHECK(v.get("f")->as_double() == 1500.0);
  CHECK(v.get("ok")->as_bool());
  CHECK(v.get("none")->is_null());
  CHECK_EQ(v.get("list")->items()[1].as_string(), std::string("a\xc3\xa9\n\""));
  CHECK_EQ(parse("\"\\ud83d\\ude00\"").as_string(), std::string("\xf0\x9f\x98\x80"));
  CHECK_EQ(parse(v.dump()).dump(), v.dump());
  CHECK_EQ(parse("[\"tab\\t\\u0001\"]").dump(), std::string("[\"tab\\t\\u0001\"]"));
  for (const char* bad : {"", "{", "[1,]", "{\"a\"}", "tru", "\"\\ud800\"", "1 2", "\"\x01\"", "\"\xff\""}) {
    CHECK_THROWS_AS(parse(bad), modelpod::Error, "not JSON");
  }
  std::string deep(100, '[');
  CHECK_THROWS_AS(parse(deep), modelpod::Error, "deeply");
  modelpod::json::Value s("\xc3\x28");
  CHECK_THROWS_AS(s.dump(), modelpod::Error, "UTF-8");
}

TEST_CASE(tensor_basics) {
  auto z = Tensor::zeros<std::int64_t>({2, 3});
  CHECK(z.dtype() == DType::Int64);
  CHECK_EQ(z.size(), 6);
  CHECK_EQ(z.nbytes(), 48u);
  CHECK(z.as<std::int64_t>() == std::vector<std::int64_t>(6, 0));
  CHECK_EQ(z.describe(), std::string("int64 of shape (2, 3)"));
  CHECK_THROWS_AS(z.data<float>(), modelpod::Error, "float32", "int64");
  CHECK_THROWS_AS(z.as<double>(), modelpod::Error, "float64");
  CHECK_THROWS_AS(z.strings(), modelpod::Error, "int64");
  std::vector<double> mine = {1.5, 2.5};
  auto v = Tensor::view<double>(mine.data(), {2});
  CHECK(v.is_view());
  CHECK(v.data<double>() == mine.data());  // borrowed, not copied
  auto c = v.clone();
  CHECK(!c.is_view());
  mine[0] = 9;
  CHECK(c.as<double>() == (std::vector<double>{1.5, 2.5}));
  CHECK(v.as<double>() == (std::vector<double>{9, 2.5}));
  auto f = Tensor::from(std::vector<float>{1, 2, 3, 4}, {2, 2});
  CHECK(f.shape() == (modelpod::Shape{2, 2}));
  auto s = Tensor::strings({"a", "b\xc3\xa9", "", "d"}, {2, 2});
  CHECK(s.dtype() == DType::String);
  CHECK(s.is_text());
  CHECK(s.as<std::string>()[1] == "b\xc3\xa9");
  Tensor s2(std::vector<std::string>{"x", "y"});
  CHECK(s2.shape() == (modelpod::Shape{2}));
  CHECK_THROWS_AS(Tensor::strings({"\xff"}), modelpod::Error, "UTF-8");
  auto b = Tensor::bytes({"\xff", std::string("\0", 1)});
  CHECK(!b.is_text());
  CHECK_THROWS_AS(b.data<std::uint8_t>(), modelpod::Error, "string");
  CHECK_THROWS_AS(Tensor::strings({"a", "b", "c"}, {2, 2}), modelpod::Error, "3 strings");
  CHECK_THROWS_AS(Tensor::zeros<float>({-1}), modelpod::Error, "dims");
  CHECK(modelpod::dtype_from_name("bfloat16") == DType::BFloat16);
  CHECK_THROWS_AS(modelpod::dtype_from_name("complex64"), modelpod::Error, "complex64");
  static_assert(!std::is_copy_constructible_v<Model>, "Model is move-only");
  static_assert(std::is_nothrow_move_constructible_v<Model>, "Model moves");
}

// -- against real packages ------------------------------------------------------------------------

TEST_CASE(addition_folder) {
  Model model(package("MODELPOD_TEST_ADDITION"));
  check_addition(model);
  CHECK(model.worker_pid() > 0);
  CHECK_EQ(model.workers_started(), 1);
}

TEST_CASE(addition_archive) {
  int pid = 0;
  {
    Model model(package("MODELPOD_TEST_ADDITION_ARCHIVE"));
    check_addition(model);
    pid = model.worker_pid();
    // the archive was extracted once, for this worker
    CHECK_EQ(temp_entries("modelpod-" + std::to_string(pid) + "-").size(), 1u);
  }
  CHECK(!process_exists(pid));  // stopped and reaped: no zombie
  CHECK(temp_entries("modelpod-" + std::to_string(pid) + "-").empty());  // its extraction is gone
  CHECK(shm_entries("modelpod-" + std::to_string(::getpid()) + "-").empty());  // and every segment
}

TEST_CASE(wrong_dtype) {
  Model model(package("MODELPOD_TEST_ADDITION"));
  auto x = Tensor::zeros<double>({3});
  auto y = Tensor::zeros<float>({3});
  CHECK_THROWS_AS(model.infer({{"x", x}, {"y", y}}), modelpod::InputError, "input 'x'", "expected float32",
                  "got float64");
  CHECK(add(model, {1}, {2}).at("out").as<float>() == std::vector<float>{3});  // still serving
  CHECK_EQ(model.workers_started(), 1);
}

TEST_CASE(symbol_mismatch) {
  Model model(package("MODELPOD_TEST_ADDITION"));
  CHECK_THROWS_AS(add(model, {1, 2, 3}, {1, 2, 3, 4}), modelpod::InputError, "num_inputs", "3", "4");
}

TEST_CASE(missing_input) {
  Model model(package("MODELPOD_TEST_ADDITION"));
  CHECK_THROWS_AS(model.infer({{"x", Tensor::zeros<float>({2})}}), modelpod::InputError, "missing input 'y'");
}

TEST_CASE(requested_outputs) {
  Model model(package("MODELPOD_TEST_MULTI"));
  TensorMap in = {{"x", Tensor::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2})},
                  {"k", Tensor::from(std::vector<std::int64_t>{1, 2, 3})},
                  {"s", Tensor::bytes({"a", "bc", "def"})}};
  TensorMap all = model.infer(in);
  CHECK_EQ(all.size(), 3u);
  CHECK(all.at("xo").as<float>() == (std::vector<float>{2, 4, 6, 8, 10, 12}));
  CHECK(all.at("xo").shape() == (modelpod::Shape{3, 2}));
  CHECK(all.at("s_bytes").as<std::string>() == (std::vector<std::string>{"A", "BC", "DEF"}));
  TensorMap some = model.infer(in, {"ko"});
  REQUIRE(some.size() == 1);
  CHECK(some.at("ko").as<std::int64_t>() == (std::vector<std::int64_t>{2, 3, 4}));
  CHECK_THROWS_AS(model.infer(in, {"nope"}), modelpod::InputError, "nope");
}

TEST_CASE(string_tensors) {
  Model model(package("MODELPOD_TEST_ECHO_STRING"));
  CHECK(model.inputs().at(0).dtype == DType::String);
  auto text = Tensor::strings({"h\xc3\xa9llo", "", "a b", "z"}, {2, 2});
  TensorMap out = model.infer({{"x", text}});
  CHECK(out.at("y").is_text());
  CHECK(out.at("y").as<std::string>() == text.as<std::string>());
  CHECK(out.at("y").shape() == (modelpod::Shape{2, 2}));
  auto raw = Tensor::bytes({std::string("\x00\xff", 2), "x"}, {1, 2});
  TensorMap back = model.infer({{"x", raw}});
  CHECK(!back.at("y").is_text());
  CHECK(back.at("y").as<std::string>() == raw.as<std::string>());
}

TEST_CASE(model_error) {
  Model model(package("MODELPOD_TEST_SLOW"));
  TensorMap in = {{"marker", Tensor::strings({""})}, {"seconds", Tensor::from(std::vector<double>{-1})}};
  CHECK_THROWS_AS(model.infer(in), modelpod::ModelError, "ValueError", "negative seconds");
  in["seconds"] = Tensor::from(std::vector<double>{0});
  CHECK(model.infer(in).at("done").as<double>() == std::vector<double>{0});
}

TEST_CASE(worker_killed_mid_call) {
  Model model(package("MODELPOD_TEST_SLOW"));
  int first = model.worker_pid();
  std::string marker = std::filesystem::temp_directory_path() / ("modelpod-cpp-test-" + std::to_string(::getpid()));
  std::filesystem::remove(marker);
  std::string message;
  bool died = false;
  std::thread call([&] {
    try {
      model.infer({{"marker", Tensor::strings({marker})}, {"seconds", Tensor::from(std::vector<double>{600})}});
    } catch (const modelpod::WorkerDiedError& e) {
      died = true;
      message = e.what();
    } catch (const std::exception& e) {
      message = std::string("another error: ") + e.what();
    }
  });
  // the model writes the marker once it runs the request; then the worker is killed under it
  for (int i = 0; i < 6000 && !std::filesystem::exists(marker); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  bool running = std::filesystem::exists(marker);
  ::kill(first, SIGKILL);
  call.join();
  std::filesystem::remove(marker);
  REQUIRE(running);
  CHECK(died);
  CHECK(message.find("died") != std::string::npos);
  CHECK(message.find("signal 9") != std::string::npos);
  CHECK(!process_exists(first));  // reaped
  // the next call starts a new worker and works
  TensorMap out = model.infer({{"marker", Tensor::strings({""})}, {"seconds", Tensor::from(std::vector<double>{0.0})}});
  CHECK(out.at("done").as<double>() == std::vector<double>{0});
  CHECK_EQ(model.workers_started(), 2);
  CHECK(model.worker_pid() != first);
  CHECK(model.worker_pid() > 0);
}

TEST_CASE(worker_killed_between_calls) {
  Model model(package("MODELPOD_TEST_ADDITION"));
  int first = model.worker_pid();
  ::kill(first, SIGKILL);
  while (!exited(first)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // nothing was in flight: the next call simply runs on a new worker
  CHECK(add(model, {1, 2}, {3, 4}).at("out").as<float>() == (std::vector<float>{4, 6}));
  CHECK_EQ(model.workers_started(), 2);
}

TEST_CASE(interpreter_missing) {
  EnvVar python("MODELPOD_PYTHON", "/nonexistent/python3");
  CHECK_THROWS_AS(Model(package("MODELPOD_TEST_ADDITION")), modelpod::StartError, "could not start a worker",
                  "tried /nonexistent/python3 (No such file or directory)", "MODELPOD_PYTHON");
}

TEST_CASE(interpreter_from_path) {
  // a python3 without modelpod first on PATH, the one with modelpod second: the second is used,
  // and without it the error names the first and why it failed
  std::string with_modelpod = package("MODELPOD_PYTHON");
  std::string venv_bin = std::filesystem::path(with_modelpod).parent_path();
  auto dir = std::filesystem::temp_directory_path() / ("modelpod-cpp-path-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string fake = dir / "python3";
  {
    std::ofstream script(fake);
    script << "#!/bin/sh\necho \"$0: No module named modelpod\" >&2\nexit 1\n";
  }
  ::chmod(fake.c_str(), 0755);
  {
    EnvVar python("MODELPOD_PYTHON", nullptr);
    EnvVar path("PATH", (dir.string() + ":" + venv_bin).c_str());
    Model model(package("MODELPOD_TEST_ADDITION"));
    CHECK_EQ(model.python(), venv_bin + "/python3");
    CHECK(add(model, {1}, {1}).at("out").as<float>() == std::vector<float>{2});
  }
  {
    EnvVar python("MODELPOD_PYTHON", nullptr);
    EnvVar path("PATH", dir.c_str());
    CHECK_THROWS_AS(Model(package("MODELPOD_TEST_ADDITION")), modelpod::StartError,
                    ("tried " + fake + " (exit code 1: ").c_str(), "No module named modelpod", "PATH");
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE(package_that_fails_to_load) {
  CHECK_THROWS_AS(Model("/nonexistent/package.modelpod"), modelpod::StartError, "no such package");
}

TEST_CASE(threads_and_models) {
  Model folder(package("MODELPOD_TEST_ADDITION"));
  Model archive(package("MODELPOD_TEST_ADDITION_ARCHIVE"));
  Model multi(package("MODELPOD_TEST_MULTI"));
  std::atomic<int> wrong{0}, done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 40; ++i) {
        try {
          int n = 1 + (t * 7 + i) % 50;
          std::vector<float> x(n), y(n);
          for (int j = 0; j < n; ++j) {
            x[j] = static_cast<float>(t * 1000 + i);
            y[j] = static_cast<float>(j);
          }
          if (t % 3 == 2) {
            std::vector<std::int64_t> k(n, t * 1000 + i);
            TensorMap out = multi.infer({{"x", Tensor::from(std::vector<float>(2 * n, 1.0f), {n, 2})},
                                         {"k", Tensor::from(k)},
                                         {"s", Tensor::bytes(std::vector<std::string>(n, "q"))}}, {"ko"});
            if (out.at("ko").as<std::int64_t>() != std::vector<std::int64_t>(n, t * 1000 + i + 1)) ++wrong;
          } else {
            Model& model = t % 3 == 0 ? folder : archive;
            auto out = add(model, x, y).at("out").as<float>();
            for (int j = 0; j < n; ++j) {
              if (out[j] != x[j] + y[j]) {
                ++wrong;
                break;
              }
            }
          }
          ++done;
        } catch (const std::exception& e) {
          std::cerr << "thread " << t << ": " << e.what() << "\n";
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK_EQ(wrong.load(), 0);
  CHECK_EQ(done.load(), 240);
  CHECK_EQ(folder.workers_started() + archive.workers_started() + multi.workers_started(), 3);
}

TEST_CASE(move_only_model) {
  Model a(package("MODELPOD_TEST_ADDITION"));
  int pid = a.worker_pid();
  Model b(std::move(a));
  CHECK_EQ(b.worker_pid(), pid);
  CHECK(add(b, {1}, {2}).at("out").as<float>() == std::vector<float>{3});
  CHECK_THROWS_AS(a.name(), modelpod::Error, "moved-from");
  Model c(package("MODELPOD_TEST_ADDITION"));
  int other = c.worker_pid();
  c = std::move(b);  // c's own worker is stopped
  CHECK(!process_exists(other));
  CHECK_EQ(c.worker_pid(), pid);
}

TEST_CASE(onnx_package) {
  Model model(package("MODELPOD_TEST_ONNX"));
  CHECK_EQ(model.platform(), std::string("onnx"));
  CHECK(model.inputs().at(0).dims.at(0).is_symbol());
  CHECK_EQ(model.inputs().at(0).dims.at(1).size, 3);
  auto out = model.infer({{"x", Tensor::from(std::vector<float>{1, 0, 0, 0, 1, 1}, {2, 3})}});
  CHECK(out.at("y").as<float>() == (std::vector<float>{1.5f, 1.5f, 8.5f, 9.5f}));
  CHECK_THROWS_AS(model.infer({{"x", Tensor::zeros<float>({2, 4})}}), modelpod::InputError, "'x'", "3");
}

TEST_CASE(isolated_environment) {
  Model model(package("MODELPOD_TEST_ISOLATED"));
  // the worker runs in the package's own environment (under the modelpod home), not MODELPOD_PYTHON
  CHECK(std::string(std::getenv("MODELPOD_HOME")).size() > 0);
  auto out = model.infer({{"x", Tensor::from(std::vector<float>{1, 2, 3})}});
  CHECK(out.at("y").as<float>() == (std::vector<float>{1, 3, 6}));
  CHECK(out.at("numpy").as<std::string>() == std::vector<std::string>{package("MODELPOD_TEST_ISOLATED_NUMPY")});
  CHECK(out.at("sees_server").data<bool>()[0] == false);
}

int main(int argc, char** argv) { return harness::main(argc, argv); }
