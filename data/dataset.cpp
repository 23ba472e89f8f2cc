#include "data/dataset.h"

namespace cnx::data {

ImageFolderDataset::ImageFolderDataset(std::vector<std::string> paths, std::vector<int64_t> labels,
                                       Transform transform, DecodeOptions decode)
    : paths_(std::move(paths)), labels_(std::move(labels)), transform_(std::move(transform)), decode_(decode) {
    CNX_CHECK(paths_.size() == labels_.size(), "ImageFolderDataset: ", paths_.size(), " paths but ", labels_.size(),
              " labels");
    CNX_CHECK(transform_ != nullptr, "ImageFolderDataset: no transform");
}

Sample ImageFolderDataset::get(int64_t index, Generator& gen) const {
    CNX_CHECK(index >= 0 && index < size(), "ImageFolderDataset: index ", index, " out of range [0, ", size(), ")");
    Image img = load_image(paths_[index], decode_);  // BadImageError names the file
    Sample s;
    s.image = transform_(img, gen);
    s.label = labels_[index];
    return s;
}

std::string ImageFolderDataset::describe(int64_t index) const {
    return index >= 0 && index < size() ? paths_[index] : Dataset::describe(index);
}

FashionMnistDataset::FashionMnistDataset(FashionMnistSplit split, FashionMnistOptions opts)
    : split_(std::move(split)), opts_(opts) {
    CNX_CHECK((int64_t)split_.images.size() == split_.count * split_.height * split_.width &&
                  (int64_t)split_.labels.size() == split_.count,
              "FashionMnistDataset: ", split_.images.size(), " pixels and ", split_.labels.size(), " labels for ",
              split_.count, " images of ", split_.height, "x", split_.width);
    CNX_CHECK(opts_.channels == 1 || opts_.channels == 3, "FashionMnistDataset: channels must be 1 or 3, got ",
              opts_.channels);
    CNX_CHECK(opts_.pad >= 0, "FashionMnistDataset: negative padding ", opts_.pad);
}

std::shared_ptr<FashionMnistDataset> FashionMnistDataset::load(const std::string& dir, bool train,
                                                               FashionMnistOptions opts) {
    return std::make_shared<FashionMnistDataset>(load_fashion_mnist(dir, train), opts);
}

Sample FashionMnistDataset::get(int64_t index, Generator& gen) const {
    CNX_CHECK(index >= 0 && index < size(), "FashionMnistDataset: index ", index, " out of range [0, ", size(), ")");
    const int64_t H = split_.height, W = split_.width, P = opts_.pad;
    const uint8_t* src = split_.images.data() + index * H * W;
    const bool flip = opts_.augment && opts_.hflip_prob > 0 && gen.uniform() < opts_.hflip_prob;
    // Background (0) padded before normalisation, like transforms.Pad on the raw image.
    const float mean = opts_.normalize ? kFashionMnistMean : 0.0f, stdv = opts_.normalize ? kFashionMnistStd : 1.0f;
    const int64_t OH = H + 2 * P, OW = W + 2 * P, C = opts_.channels;
    Tensor t = full({OH, OW, C}, (0.0f - mean) / stdv);
    float* o = t.data<float>();
    for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
            float v = (src[y * W + (flip ? W - 1 - x : x)] / 255.0f - mean) / stdv;
            float* p = o + ((y + P) * OW + x + P) * C;
            for (int64_t c = 0; c < C; ++c) p[c] = v;
        }
    return {t, split_.labels[index]};
}

}  // namespace cnx::data
