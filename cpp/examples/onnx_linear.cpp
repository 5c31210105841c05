// An ONNX package from C++: y = x @ W + b, x float32 of shape (batch, 3). Pack it with the Python
// snippet in docs/cpp.md ("An ONNX package"), then
//
//   ./modelpod_onnx_linear linear.modelpod
#include <modelpod/modelpod.hpp>

#include <iostream>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: modelpod_onnx_linear PACKAGE\n";
    return 2;
  }
  try {
    modelpod::Model model(argv[1]);
    std::vector<float> rows = {1, 0, 0,
                               0, 1, 1};
    auto x = modelpod::Tensor::from(rows, {2, 3});
    auto out = model.infer({{"x", x}});
    const modelpod::Tensor& y = out.at("y");
    std::cout << "model " << model.name() << " (" << model.platform() << ")\n";
    std::cout << "y " << y.describe() << " =";
    for (float v : y.as<float>()) std::cout << " " << v;
    std::cout << "\n";
    // a batch of another size works (the symbol 'batch' takes any size)...
    auto one = model.infer({{"x", modelpod::Tensor::from(std::vector<float>{1, 1, 1}, {1, 3})}});
    std::cout << "y1 =";
    for (float v : one.at("y").as<float>()) std::cout << " " << v;
    std::cout << "\n";
    // ...and a wrong dtype is modelpod's own message
    try {
      model.infer({{"x", modelpod::Tensor::zeros<double>({2, 3})}});
    } catch (const modelpod::InputError& e) {
      std::cout << "error: " << e.what() << "\n";
    }
  } catch (const modelpod::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
