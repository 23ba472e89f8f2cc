// convnext export-images --dataset fashion-mnist --out DIR [--count N]: a built-in dataset's
// images as PNG files in one folder per class (OUT/Sneaker/test_00012.png), the layout predict
// --image, predict --grid (the folder is the true label), gradcam and eval --data read. How the
// demo gets Fashion-MNIST pictures to show.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "apps/command.h"
#include "core/error.h"
#include "data/idx.h"
#include "io/png_writer.h"

namespace {

namespace fs = std::filesystem;
using namespace cnx;

struct ExportOptions {
    std::string dataset, data_dir = data::kFashionMnistDir, split = "test", out;
    int64_t count = 16, start = 0;
};

int run_export(const ExportOptions& o) {
    CNX_CHECK(o.dataset == "fashion-mnist", "export-images: unknown --dataset '", o.dataset, "' (known: fashion-mnist)");
    data::FashionMnistSplit s = data::load_fashion_mnist(o.data_dir, o.split == "train");
    CNX_CHECK(o.start < s.count, "export-images: --start ", o.start, " is past the ", s.count, " images of the ", o.split,
              " split");
    const int64_t end = std::min(s.count, o.start + o.count);
    for (int64_t i = o.start; i < end; ++i) {
        std::string name = data::kFashionMnistClasses.at(s.labels[i]);
        for (char& c : name)
            if (c == '/') c = '_';  // "T-shirt/top" -> folder "T-shirt_top" (predict maps it back)
        const fs::path dir = fs::path(o.out) / name;
        std::error_code ec;
        fs::create_directories(dir, ec);
        CNX_CHECK(!ec, "export-images: cannot create ", dir.string(), " (", ec.message(), ")");
        char file[64];
        std::snprintf(file, sizeof file, "%s_%05lld.png", o.split.c_str(), (long long)i);
        io::write_png((dir / file).string(), s.images.data() + i * s.height * s.width, (int)s.width, (int)s.height, 1);
    }
    std::printf("%lld %s images (from #%lld) written under %s\n", (long long)(end - o.start), o.split.c_str(),
                (long long)o.start, o.out.c_str());
    return 0;
}

std::function<int()> setup_export_images(CLI::App& root) {
    auto* cmd = root.add_subcommand("export-images", "Write a built-in dataset's images as PNG files, a folder per class");
    auto o = std::make_shared<ExportOptions>();
    cmd->add_option("--dataset", o->dataset, "Built-in dataset: fashion-mnist")->required();
    cmd->add_option("--data", o->data_dir, "Where the dataset's files are")->capture_default_str();
    cmd->add_option("--split", o->split, "test or train")->check(CLI::IsMember({"test", "train"}))->capture_default_str();
    cmd->add_option("--count", o->count, "Images to write")->check(CLI::PositiveNumber)->capture_default_str();
    cmd->add_option("--start", o->start, "Index of the first image")->check(CLI::NonNegativeNumber)->capture_default_str();
    cmd->add_option("--out", o->out, "Folder to write into")->required();
    return [o] { return run_export(*o); };
}

}  // namespace

// The command's name holds a dash, which the CONVNEXT_COMMAND macro cannot spell.
static const bool convnext_command_registered_export_images = cnx::app::register_command("export-images", setup_export_images);
