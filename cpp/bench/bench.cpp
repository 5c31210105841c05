// The C++ side of benchmarks/cpp_infer.py: loads an identity package (out = x, float32 (n,)) and
// answers commands on stdin, one per line:
//
//   run ELEMENTS CALLS   ->  "us <median µs per call>" (after 5 warm-up calls; the output is checked)
//   pid                  ->  "pid <worker pid>"
//   quit
#include <modelpod/modelpod.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: modelpod_bench PACKAGE\n";
    return 2;
  }
  try {
    modelpod::Model model(argv[1]);
    std::string line;
    std::cout << "ready\n" << std::flush;
    while (std::getline(std::cin, line)) {
      std::istringstream in(line);
      std::string command;
      in >> command;
      if (command == "quit") break;
      if (command == "pid") {
        std::cout << "pid " << model.worker_pid() << "\n" << std::flush;
        continue;
      }
      if (command != "run") {
        std::cout << "error unknown command\n" << std::flush;
        continue;
      }
      std::int64_t elements = 0, calls = 0;
      in >> elements >> calls;
      std::vector<float> data(static_cast<std::size_t>(elements));
      for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i % 1000);
      auto x = modelpod::Tensor::view<float>(data.data(), {elements});
      for (int i = 0; i < 5; ++i) model.infer({{"x", x}});
      std::vector<double> times;
      modelpod::TensorMap out;
      for (std::int64_t i = 0; i < calls; ++i) {
        auto start = std::chrono::steady_clock::now();
        out = model.infer({{"x", x}});
        auto end = std::chrono::steady_clock::now();
        times.push_back(std::chrono::duration<double, std::micro>(end - start).count());
      }
      const float* got = out.at("out").data<float>();
      if (out.at("out").size() != elements || !std::equal(data.begin(), data.end(), got)) {
        std::cout << "error wrong output\n" << std::flush;
        return 1;
      }
      std::sort(times.begin(), times.end());
      std::cout << "us " << times[times.size() / 2] << "\n" << std::flush;
    }
  } catch (const modelpod::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
