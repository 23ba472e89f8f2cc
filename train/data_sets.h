#pragma once
// The data sets of the classic fine-tuning workflow: an image folder split per class into train
// and validation (class_indices.json written beside the run), or Fashion-MNIST, with the
// transforms and normalisation the CLI uses, optionally cut to their first N samples.
//
//   train::DataConfig cfg;
//   cfg.data_dir = "flower_photos";
//   train::DataSets ds = train::make_datasets(cfg, std::cout);
//   // ds.train, ds.val, ds.classes -> train::fit(...)
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace cnx::train {

struct DataConfig {
    std::string data_dir;   // ImageFolder root (or the Fashion-MNIST folder with dataset "fashion-mnist")
    std::string dataset;    // "" or "fashion-mnist"
    int64_t image_size = 224;
    double crop_pct = 0.875;
    double val_rate = 0.2;
    uint64_t seed = 0;
    bool augment = true;            // false: the eval transform for training too (--no-augment)
    bool eval_all = false;          // eval: the whole folder (no split) / the Fashion-MNIST test split
    std::string class_indices_out;  // where to write class_indices.json ("" = nowhere)
    int64_t train_limit = 0, val_limit = 0;  // first N samples only (quick runs, tests); 0 = all
    // Image folders: the normalisation (empty: ImageNet's), e.g. from a weights file's metadata.
    std::vector<float> mean, std;
};

struct DataSets {
    std::shared_ptr<data::Dataset> train, val;  // val may be null (no validation split)
    std::vector<std::string> classes;
    int64_t in_chans = 3;
    int64_t image_size = 224;
    // How one image is brought to image_size for evaluation: its shorter side resized to
    // eval_resize, then centre-cropped (Fashion-MNIST: 28, the crop pads it to 32).
    int64_t eval_resize = 256;
    double crop_pct = 0.875;         // image folders' (eval_resize = int(image_size / crop_pct)); 0: none
    std::vector<float> mean, std;   // the normalisation the inputs got (saved with the weights)
};

// Reports what it found on `log`.
DataSets make_datasets(const DataConfig& cfg, std::ostream& log);

// The first n samples of a dataset.
class SubsetDataset : public data::Dataset {
public:
    SubsetDataset(std::shared_ptr<data::Dataset> base, int64_t n) : base_(std::move(base)), n_(n) {}
    int64_t size() const override { return n_; }
    data::Sample get(int64_t i, Generator& g) const override { return base_->get(i, g); }
    std::string describe(int64_t i) const override { return base_->describe(i); }

private:
    std::shared_ptr<data::Dataset> base_;
    int64_t n_;
};

}  // namespace cnx::train
