#pragma once
// Datasets: indexable collections of (image, label) samples, each image a float [H, W, C]
// tensor ready to be stacked into an NHWC batch. get() receives the generator that drives the
// sample's augmentation, so the loader can make augmentation independent of thread timing.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/idx.h"
#include "data/image.h"
#include "data/transforms.h"

namespace cnx::data {

struct Sample {
    Tensor image;  // float [H, W, C]
    int64_t label = 0;
};

class Dataset {
public:
    virtual ~Dataset() = default;
    virtual int64_t size() const = 0;
    // Must be safe to call from several threads at once. Throws BadImageError for an input
    // that cannot be decoded (the loader may skip those), any other error for real bugs.
    virtual Sample get(int64_t index, Generator& gen) const = 0;
    // Names sample `index` in messages (its file, for image folders).
    virtual std::string describe(int64_t index) const { return "sample " + std::to_string(index); }
};

// Files + labels + a transform (decode -> Transform -> sample).
class ImageFolderDataset : public Dataset {
public:
    ImageFolderDataset(std::vector<std::string> paths, std::vector<int64_t> labels, Transform transform,
                       DecodeOptions decode = {});
    int64_t size() const override { return (int64_t)paths_.size(); }
    Sample get(int64_t index, Generator& gen) const override;
    std::string describe(int64_t index) const override;
    const std::vector<std::string>& paths() const { return paths_; }
    const std::vector<int64_t>& labels() const { return labels_; }

private:
    std::vector<std::string> paths_;
    std::vector<int64_t> labels_;
    Transform transform_;
    DecodeOptions decode_;
};

struct FashionMnistOptions {
    bool augment = false;     // random horizontal flip (training)
    double hflip_prob = 0.5;
    int64_t pad = 2;          // 28x28 -> 32x32: the stem and three downsamples divide by 32
    int64_t channels = 1;     // 3 replicates the grey channel (for ImageNet-shaped stems)
    bool normalize = true;    // (x - 0.2860) / 0.3530
};

// Fashion-MNIST held in memory as uint8 (47 MB for the training split).
class FashionMnistDataset : public Dataset {
public:
    FashionMnistDataset(FashionMnistSplit split, FashionMnistOptions opts = {});
    // load_fashion_mnist(dir, train) wrapped.
    static std::shared_ptr<FashionMnistDataset> load(const std::string& dir, bool train, FashionMnistOptions opts = {});
    int64_t size() const override { return split_.count; }
    Sample get(int64_t index, Generator& gen) const override;
    const std::vector<int64_t>& labels() const { return split_.labels; }
    const std::vector<std::string>& classes() const { return kFashionMnistClasses; }

private:
    FashionMnistSplit split_;
    FashionMnistOptions opts_;
};

}  // namespace cnx::data
