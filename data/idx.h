#pragma once
// IDX files (the MNIST format), gzip-compressed or plain, and the Fashion-MNIST dataset built
// from them. Only unsigned-byte IDX (type 0x08) is accepted; magic, dimensions and the data
// length are validated before anything is trusted.
#include <cstdint>
#include <string>
#include <vector>

namespace cnx::data {

struct IdxArray {
    std::vector<int64_t> dims;  // e.g. {60000, 28, 28} for images, {60000} for labels
    std::vector<uint8_t> data;  // row-major, exactly prod(dims) bytes
};

// Throws cnx::Error naming the file for a missing file, a bad magic, a truncated or corrupt
// stream, or trailing bytes after the declared data.
IdxArray read_idx(const std::string& path);

inline const char* const kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
inline const std::vector<std::string> kFashionMnistClasses{
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

struct FashionMnistSplit {
    int64_t count = 0, height = 0, width = 0;
    std::vector<uint8_t> images;  // [count, height, width]
    std::vector<int64_t> labels;  // [count], each in [0, 10)
};

// train: {dir}/train-images-idx3-ubyte.gz + train-labels-idx1-ubyte.gz (60000); otherwise the
// t10k files (10000), which serve as the validation set.
FashionMnistSplit load_fashion_mnist(const std::string& dir, bool train);

}  // namespace cnx::data
