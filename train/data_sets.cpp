#include "train/data_sets.h"

#include "data/image_folder.h"
#include "data/transforms.h"

namespace cnx::train {

DataSets make_datasets(const DataConfig& cfg, std::ostream& log) {
    DataSets ds;
    if (cfg.dataset == "fashion-mnist") {
        std::string dir = cfg.data_dir.empty() ? data::kFashionMnistDir : cfg.data_dir;
        data::FashionMnistOptions train_opts;
        train_opts.augment = cfg.augment;
        data::FashionMnistOptions val_opts;
        ds.val = data::FashionMnistDataset::load(dir, false, val_opts);
        if (!cfg.eval_all) ds.train = data::FashionMnistDataset::load(dir, true, train_opts);
        ds.classes = data::kFashionMnistClasses;
        ds.in_chans = 1;
        ds.image_size = 28 + 2 * train_opts.pad;
        ds.eval_resize = 28;
        ds.crop_pct = 0;
        ds.mean = {data::kFashionMnistMean};
        ds.std = {data::kFashionMnistStd};
        log << "Fashion-MNIST from " << dir << ": " << (ds.train ? ds.train->size() : 0) << " training, "
            << ds.val->size() << " test images (28x28 padded to " << ds.image_size << "x" << ds.image_size
            << ", 1 channel)\n";
        if (!cfg.class_indices_out.empty()) data::write_class_indices(cfg.class_indices_out, ds.classes);
    } else if (!cfg.dataset.empty()) {
        fail("unknown --dataset '", cfg.dataset, "' (known: fashion-mnist; or use --data DIR for an image folder)");
    } else {
        CNX_CHECK(!cfg.data_dir.empty(), "no data: pass --data DIR (an image folder) or --dataset fashion-mnist");
        ds.image_size = cfg.image_size;
        ds.eval_resize = data::eval_resize_size(cfg.image_size, cfg.crop_pct);
        ds.crop_pct = cfg.crop_pct;
        ds.mean = cfg.mean.empty() ? data::kImageNetMean : cfg.mean;
        ds.std = cfg.std.empty() ? data::kImageNetStd : cfg.std;
        data::Transform eval_tf = data::eval_transform(cfg.image_size, cfg.crop_pct, ds.mean, ds.std);
        data::TrainTransformOptions tto;
        tto.image_size = cfg.image_size;
        tto.mean = ds.mean, tto.std = ds.std;
        data::Transform train_tf = cfg.augment ? data::train_transform(tto) : eval_tf;
        if (cfg.eval_all) {
            data::ImageFolderIndex idx = data::scan_image_folder(cfg.data_dir);
            ds.classes = idx.classes;
            ds.val = std::make_shared<data::ImageFolderDataset>(idx.paths, idx.labels, eval_tf);
            log << idx.paths.size() << " images in " << idx.classes.size() << " classes under " << cfg.data_dir
                << "\n";
        } else {
            data::SplitOptions so;
            so.val_rate = cfg.val_rate;
            so.seed = cfg.seed;
            so.class_indices_path = cfg.class_indices_out;
            so.log = &log;
            data::SplitData split = data::read_split_data(cfg.data_dir, so);
            ds.classes = split.classes;
            ds.train = std::make_shared<data::ImageFolderDataset>(split.train_paths, split.train_labels, train_tf);
            if (!split.val_paths.empty())
                ds.val = std::make_shared<data::ImageFolderDataset>(split.val_paths, split.val_labels, eval_tf);
        }
    }
    if (ds.train && cfg.train_limit > 0 && cfg.train_limit < ds.train->size())
        ds.train = std::make_shared<SubsetDataset>(ds.train, cfg.train_limit);
    if (ds.val && cfg.val_limit > 0 && cfg.val_limit < ds.val->size())
        ds.val = std::make_shared<SubsetDataset>(ds.val, cfg.val_limit);
    if (ds.train) CNX_CHECK(ds.train->size() > 0, "no training images under ", cfg.data_dir);
    return ds;
}

}  // namespace cnx::train
