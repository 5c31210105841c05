// The seed's addition model (out = x + y), run from C++: the same package, the same call as Python.
//
//   python examples/build_examples.py examples/build
//   ./modelpod_addition examples/build/repository/addition/1
#include <modelpod/modelpod.hpp>

#include <iostream>
#include <vector>

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "examples/build/repository/addition/1";
  try {
    // To show two ways of passing data: x is a tensor modelpod allocates, y borrows a vector.
    const float x_data[] = {1, 2, 3, 4};
    const std::vector<float> y_data = {5, 6, 7, 8};

    modelpod::Model model(path);  // a package folder or a .tar.gz / .zip archive

    auto x = modelpod::Tensor::zeros<float>({4});
    std::copy(x_data, x_data + 4, x.data<float>());
    auto y = modelpod::Tensor::view<float>(y_data.data(), {4});

    modelpod::TensorMap out = model.infer({{"x", x}, {"y", y}});

    std::vector<float> sum = out.at("out").as<float>();  // {6, 8, 10, 12}
    std::cout << "model " << model.name() << " (" << model.platform() << ")\n";
    for (const auto& spec : model.inputs()) std::cout << "input " << spec.name << ": " << spec.describe() << "\n";
    std::cout << "out =";
    for (float v : sum) std::cout << " " << v;
    std::cout << "\nshape = " << out.at("out").shape().at(0) << "\n";
  } catch (const modelpod::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
