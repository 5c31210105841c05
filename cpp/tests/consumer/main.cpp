#include <modelpod/modelpod.hpp>

#include <iostream>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  try {
    modelpod::Model model(argv[1]);
    auto x = modelpod::Tensor::from(std::vector<float>{1, 2, 3, 4});
    auto y = modelpod::Tensor::from(std::vector<float>{10, 20, 30, 40});
    auto out = model.infer({{"x", x}, {"y", y}});
    std::cout << "consumer out =";
    for (float v : out.at("out").as<float>()) std::cout << " " << v;
    std::cout << "\n";
  } catch (const modelpod::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
