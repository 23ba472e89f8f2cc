// convnext eval: top-1/top-5, per-class accuracy and the confusion matrix of a trained model.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "apps/command.h"
#include "apps/inference.h"
#include "apps/pictures.h"
#include "apps/precision_option.h"
#include "apps/run_common.h"
#include "data/image_folder.h"
#include "core/json.h"
#include "ops/packed_weights.h"
#include "train/train.h"

namespace {
using namespace cnx;
using json = nlohmann::json;

struct EvalOptions {
    train::DataConfig data;
    app::ModelSpec model;
    std::string weights, classes;
    std::string precision = "fp32";
    int64_t num_classes = 0, batch_size = 32;
    int workers = 2;
    bool json_out = false, skip_bad_images = false, pack_weights = false;
    std::string plot;  // --plot FILE.png
};

std::function<int()> setup_eval(CLI::App& root) {
    auto* cmd = root.add_subcommand("eval", "Accuracy, per-class accuracy and confusion matrix on a dataset");
    auto o = std::make_shared<EvalOptions>();
    o->model.add_options(cmd);
    cmd->add_option("--weights", o->weights, "Weights (.safetensors or .pth)")->required();
    cmd->add_option("--data", o->data.data_dir, "Image folder with one subfolder per class (every image is used)");
    cmd->add_option("--dataset", o->data.dataset, "Built-in dataset: fashion-mnist (its test split)");
    cmd->add_option("--image-size", o->data.image_size, "Input size")->capture_default_str();
    cmd->add_option("--crop-pct", o->data.crop_pct, "Resize to image_size / crop_pct, centre crop")->capture_default_str();
    cmd->add_option("--classes", o->classes, "class_indices.json giving the class names (checked against the folders)");
    cmd->add_option("--num-classes", o->num_classes, "Classes of the model (default: from the weights)");
    cmd->add_option("--batch-size", o->batch_size, "Batch size")->capture_default_str();
    cmd->add_option("--workers", o->workers, "Data loading threads")->capture_default_str();
    cmd->add_flag("--skip-bad-images", o->skip_bad_images, "Warn about undecodable images and leave them out");
    cmd->add_flag("--json", o->json_out, "Print one JSON object");
    cmd->add_option("--val-limit", o->data.val_limit, "Use only the first N images");
    cmd->add_option("--plot", o->plot, "Also draw the confusion matrix and per-class accuracy (PNG)");
    cmd->add_flag("--pack-weights", o->pack_weights,
                  "Pack the weights for the matrix products once and keep them (as predict --pack-weights)");
    app::add_precision_option(cmd, o->precision);
    return [o, cmd]() -> int {
        PrecisionGuard precision(parse_precision(o->precision));
        // A weights file written by convnext train supplies what the flags leave out.
        const io::ModelMetadata md = io::read_model_metadata(o->weights);
        app::apply_eval_metadata(md, {cmd->count("--model") > 0, cmd->count("--image-size") > 0, cmd->count("--crop-pct") > 0},
                                 o->model, o->data);
        if (!o->plot.empty()) app::note_font_fallback();  // a bad CONVNEXT_FONT fails before evaluating
        o->data.augment = false;
        o->data.eval_all = true;
        std::ostringstream quiet;
        train::DataSets ds = train::make_datasets(o->data, o->json_out ? quiet : std::cout);
        std::vector<std::string> names = ds.classes;
        if (!o->classes.empty()) {
            names = data::read_class_indices(o->classes);
            if (o->data.dataset.empty())
                CNX_CHECK(names == ds.classes, "--classes '", o->classes, "' names ", names.size(),
                          " classes that differ from the folders under ", o->data.data_dir);
        } else if (md.classes.size() > names.size() && std::equal(names.begin(), names.end(), md.classes.begin())) {
            names = md.classes;  // a head wider than the data's classes, named in the file
        }
        app::WeightsShape ws = app::peek_weights_shape(o->weights);
        models::ConvNeXtOptions mo;
        mo.num_classes = o->num_classes > 0 ? o->num_classes : (ws.num_classes > 0 ? ws.num_classes : (int64_t)names.size());
        mo.in_chans = ws.in_chans > 0 ? ws.in_chans : ds.in_chans;
        CNX_CHECK(mo.in_chans == ds.in_chans, "weights '", o->weights, "' expect ", mo.in_chans,
                  "-channel input, the data has ", ds.in_chans);
        CNX_CHECK(mo.num_classes >= (int64_t)ds.classes.size(), "the model has ", mo.num_classes,
                  " classes, the data ", ds.classes.size());
        auto model = app::make_model(o->model, mo);
        train::load_pretrained(*model, o->weights, false, o->json_out ? quiet : std::cout);
        std::unique_ptr<PackedWeightsScope> packed;  // ends before the model it points into
        if (o->pack_weights) packed = std::make_unique<PackedWeightsScope>(model->parameters());
        train::EvalOptions eo;
        eo.num_classes = mo.num_classes;
        eo.batch_size = o->batch_size;
        eo.workers = o->workers;
        eo.skip_bad_images = o->skip_bad_images;
        std::unique_ptr<app::Progress> progress;
        if (!o->json_out) {
            eo.on_begin = [&](int64_t batches) {
                progress = std::make_unique<app::Progress>("eval", batches, app::stderr_is_tty());
            };
            eo.on_batch_end = [&](int64_t done) { progress->update(done, ""); };
            eo.on_end = [&] { progress->finish(""); };
        }
        auto r = train::evaluate(*model, ds.val, eo);
        auto label = [&](size_t c) { return c < names.size() ? names[c] : std::to_string(c); };
        if (!o->plot.empty()) {
            std::vector<std::string> labels;
            for (size_t c = 0; c < r.confusion.size(); ++c) labels.push_back(label(c));
            app::write_confusion_plot(o->plot, r, labels);
        }
        if (o->json_out) {
            json per = json::object();
            for (size_t c = 0; c < r.per_class_acc.size(); ++c)
                per[label(c)] = std::isfinite(r.per_class_acc[c]) ? json(r.per_class_acc[c]) : json(nullptr);
            json classes = json::array();
            for (size_t c = 0; c < (size_t)mo.num_classes; ++c) classes.push_back(label(c));
            std::cout << dump_json({{"top1_acc", r.top1}, {"top5_acc", r.top5}, {"loss", r.loss}, {"count", r.count},
                                    {"per_class_acc", per}, {"classes", classes}, {"confusion", r.confusion}})
                      << "\n";
            return 0;
        }
        std::printf("%lld images: top-1 %.4f, top-5 %.4f, loss %.4f\n\nper class:\n", (long long)r.count, r.top1, r.top5,
                    r.loss);
        for (size_t c = 0; c < r.per_class_acc.size(); ++c)
            std::printf("  %3zu %-20s %s\n", c, label(c).c_str(),
                        std::isfinite(r.per_class_acc[c]) ? std::to_string(r.per_class_acc[c]).c_str() : "-");
        std::printf("\nconfusion (rows: true, columns: predicted):\n     ");
        for (size_t c = 0; c < r.confusion.size(); ++c) std::printf("%6zu", c);
        std::printf("\n");
        for (size_t t = 0; t < r.confusion.size(); ++t) {
            std::printf("%5zu", t);
            for (auto v : r.confusion[t]) std::printf("%6lld", (long long)v);
            std::printf("\n");
        }
        return 0;
    };
}

}  // namespace

CONVNEXT_COMMAND(eval, setup_eval)
