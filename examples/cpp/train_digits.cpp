// Trains a small CNN on scikit-learn's handwritten digits (1,797 8x8 images,
// the data file that ships inside scikit-learn) with myconv's LibTorch modules,
// or with torch::nn::Conv2d: the two runs are one flag apart.
//
//   myconv_train_digits --data <sklearn>/datasets/data/digits.csv.gz [--conv myconv|torch]
//                       [--epochs 15] [--batch-size 64] [--lr 0.05] [--seed 0] [--threads N]
//                       [--out DIR]
//
// Each epoch prints the training loss, the test accuracy and images/s; the
// model is saved to DIR/checkpoint-<conv>.pt (torch::save) after every epoch.
// The model's state loads into the other --conv's model unchanged (the
// parameters have the same names and shapes).
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <myconv/myconv.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Args {
  std::string data, conv = "myconv", out = ".";
  int64_t epochs = 15, batch_size = 64, seed = 0, threads = 0;
  double lr = 0.05;
};

// The whole of `text` as a number, or an error that names the option.
template <class T>
T number(const std::string& option, const std::string& text) {
  std::istringstream in(text);
  T v{};
  if (!(in >> v) || !(in >> std::ws).eof()) {
    throw std::invalid_argument(option + ": expected a number, got '" + text + "'");
  }
  return v;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string key = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        throw std::invalid_argument("missing value after " + key);
      }
      return argv[++i];
    };
    if (key == "--data") {
      a.data = value();
    } else if (key == "--conv") {
      a.conv = value();
    } else if (key == "--out") {
      a.out = value();
    } else if (key == "--epochs") {
      a.epochs = number<int64_t>(key, value());
    } else if (key == "--batch-size") {
      a.batch_size = number<int64_t>(key, value());
    } else if (key == "--seed") {
      a.seed = number<int64_t>(key, value());
    } else if (key == "--threads") {
      a.threads = number<int64_t>(key, value());
    } else if (key == "--lr") {
      a.lr = number<double>(key, value());
    } else {
      throw std::invalid_argument("unknown option " + key +
                                  " (--data PATH --conv myconv|torch --epochs N --batch-size N --lr X --seed N "
                                  "--threads N --out DIR)");
    }
  }
  if (a.data.empty()) {
    throw std::invalid_argument("--data: the path of scikit-learn's digits.csv.gz is required");
  }
  if (a.conv != "myconv" && a.conv != "torch") {
    throw std::invalid_argument("--conv must be myconv or torch");
  }
  if (a.epochs < 1 || a.batch_size < 1 || !(a.lr > 0) || a.threads < 0) {
    throw std::invalid_argument("--epochs and --batch-size must be at least 1, --lr positive, --threads >= 0");
  }
  return a;
}

// The digits: rows of 64 pixel values (0..16) and a label, comma-separated,
// gzip-compressed (read through `gzip -dc`: gzip must be on the PATH) or plain.
std::pair<at::Tensor, at::Tensor> load_digits(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    throw std::runtime_error("no such file: " + path);
  }
  const bool gz = path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0;
  std::string quoted = "'";  // the path as one shell word
  for (const char c : path) {
    quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  }
  quoted += "'";
  const std::string command = (gz ? "gzip -dc " : "cat ") + quoted;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    throw std::runtime_error("cannot read " + path);
  }
  std::string text;
  char buffer[1 << 16];
  for (size_t n; (n = fread(buffer, 1, sizeof(buffer), pipe)) > 0;) {
    text.append(buffer, n);
  }
  if (pclose(pipe) != 0) {
    throw std::runtime_error("reading " + path + " failed (" + command + ")");
  }
  std::vector<float> pixels;
  std::vector<int64_t> labels;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) {
      continue;
    }
    std::vector<float> row;
    std::istringstream cells(line);
    for (std::string cell; std::getline(cells, cell, ',');) {
      row.push_back(number<float>("a value in " + path, cell));
    }
    if (row.size() != 65) {
      throw std::runtime_error("expected 65 values a row (64 pixels and a label) in " + path);
    }
    if (row.back() < 0 || row.back() > 9) {
      throw std::runtime_error("a label outside 0..9 in " + path);
    }
    pixels.insert(pixels.end(), row.begin(), row.end() - 1);
    labels.push_back(static_cast<int64_t>(row.back()));
  }
  const int64_t n = static_cast<int64_t>(labels.size());
  if (n < 10) {
    throw std::runtime_error("only " + std::to_string(n) + " images in " + path);
  }
  const at::Tensor x = torch::from_blob(pixels.data(), {n, 1, 8, 8}, torch::kFloat).clone() / 16.0;
  const at::Tensor y = torch::from_blob(labels.data(), {n}, torch::kLong).clone();
  return {x, y};
}

// The CNN of the Python training script (python -m myconv.train): 3x3
// convolutions, a strided one, batch norm, global average pooling.
template <class Conv, class Options>
torch::nn::Sequential make_model() {
  return torch::nn::Sequential(
      Conv(Options(1, 16, 3).padding(1)), torch::nn::BatchNorm2d(16), torch::nn::ReLU(),
      Conv(Options(16, 32, 3).stride(2).padding(1)), torch::nn::BatchNorm2d(32), torch::nn::ReLU(),
      Conv(Options(32, 32, 3).padding(1)), torch::nn::BatchNorm2d(32), torch::nn::ReLU(),
      torch::nn::AdaptiveAvgPool2d(1), torch::nn::Flatten(), torch::nn::Linear(32, 10));
}

double accuracy(torch::nn::Sequential& model, const at::Tensor& x, const at::Tensor& y) {
  torch::NoGradGuard no_grad;
  model->eval();
  const at::Tensor predicted = model->forward(x).argmax(1);
  model->train();
  return predicted.eq(y).to(torch::kDouble).mean().item<double>();
}

} // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse(argc, argv);
    if (args.threads > 0) {
      at::set_num_threads(static_cast<int>(args.threads));
    }
    torch::manual_seed(args.seed);
    auto [x, y] = load_digits(args.data);
    // A seeded 80/20 split.
    const int64_t n = x.size(0), n_test = n / 5;
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::mt19937_64 rng(static_cast<uint64_t>(args.seed));
    std::shuffle(order.begin(), order.end(), rng);
    const at::Tensor index = torch::tensor(order, torch::kLong);
    const at::Tensor x_test = x.index_select(0, index.slice(0, 0, n_test));
    const at::Tensor y_test = y.index_select(0, index.slice(0, 0, n_test));
    const at::Tensor x_train = x.index_select(0, index.slice(0, n_test));
    const at::Tensor y_train = y.index_select(0, index.slice(0, n_test));

    torch::nn::Sequential model = args.conv == "myconv"
                                      ? make_model<myconv::nn::Conv2d, myconv::nn::Conv2dOptions>()
                                      : make_model<torch::nn::Conv2d, torch::nn::Conv2dOptions>();
    torch::optim::SGD optimizer(model->parameters(),
                                torch::optim::SGDOptions(args.lr).momentum(0.9).weight_decay(5e-4).nesterov(true));
    std::cout << "digits: " << x_train.size(0) << " training, " << x_test.size(0) << " test images; convolutions: "
              << (args.conv == "myconv" ? "myconv::nn::Conv2d" : "torch::nn::Conv2d") << ", " << at::get_num_threads()
              << " threads\n";

    std::filesystem::create_directories(args.out);
    const std::string checkpoint = (std::filesystem::path(args.out) / ("checkpoint-" + args.conv + ".pt")).string();
    double test_accuracy = 0;
    for (int64_t epoch = 1; epoch <= args.epochs; ++epoch) {
      const auto start = std::chrono::steady_clock::now();
      const at::Tensor perm = torch::randperm(x_train.size(0), torch::kLong);
      double loss_sum = 0;
      int64_t batches = 0;
      for (int64_t i = 0; i < x_train.size(0); i += args.batch_size) {
        const at::Tensor idx = perm.slice(0, i, std::min(i + args.batch_size, x_train.size(0)));
        optimizer.zero_grad();
        const at::Tensor loss =
            torch::nn::functional::cross_entropy(model->forward(x_train.index_select(0, idx)), y_train.index_select(0, idx));
        loss.backward();
        optimizer.step();
        loss_sum += loss.item<double>();
        ++batches;
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      test_accuracy = accuracy(model, x_test, y_test);
      torch::save(model, checkpoint);
      std::printf("epoch %2lld/%lld  loss %.4f  test accuracy %.2f %%  %.0f images/s\n",
                  static_cast<long long>(epoch), static_cast<long long>(args.epochs), loss_sum / batches,
                  100.0 * test_accuracy, x_train.size(0) / seconds);
      std::fflush(stdout);
    }
    std::printf("final test accuracy: %.2f %%  (checkpoint: %s)\n", 100.0 * test_accuracy, checkpoint.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "myconv_train_digits: " << e.what() << "\n";
    return 2;
  }
}
