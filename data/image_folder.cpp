#include "data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>

#include "core/error.h"
#include "core/rng.h"
#include "core/json.h"

namespace cnx::data {
namespace fs = std::filesystem;

bool has_image_extension(const std::string& filename) {
    auto dot = filename.rfind('.');
    if (dot == std::string::npos || dot == 0) return false;
    std::string ext = filename.substr(dot);
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return (char)std::tolower(c); });
    return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

ImageFolderIndex scan_image_folder(const std::string& root) {
    std::error_code ec;
    CNX_CHECK(fs::exists(root, ec), "image folder ", root, ": does not exist");
    CNX_CHECK(fs::is_directory(root, ec), "image folder ", root, ": not a directory");
    ImageFolderIndex index;
    index.root = root;
    fs::directory_iterator it(root, ec), end;
    CNX_CHECK(!ec, "image folder ", root, ": cannot list (", ec.message(), ")");
    for (; it != end; it.increment(ec)) {
        CNX_CHECK(!ec, "image folder ", root, ": cannot list (", ec.message(), ")");
        std::string name = it->path().filename().string();
        // Hidden folders (.ipynb_checkpoints, .git) are never classes.
        if (name.empty() || name[0] == '.') continue;
        if (it->is_directory(ec)) index.classes.push_back(name);
    }
    // Byte order of UTF-8 names is code-point order, which is what Python's sort uses.
    std::sort(index.classes.begin(), index.classes.end());
    CNX_CHECK(!index.classes.empty(), "image folder ", root, ": no class subfolders (expected ", root,
              "/<class>/<image>)");
    for (size_t label = 0; label < index.classes.size(); ++label) {
        fs::path dir = fs::path(root) / index.classes[label];
        std::vector<std::string> files;
        fs::directory_iterator f(dir, ec);
        CNX_CHECK(!ec, "image folder ", dir.string(), ": cannot list (", ec.message(), ")");
        for (; f != end; f.increment(ec)) {
            CNX_CHECK(!ec, "image folder ", dir.string(), ": cannot list (", ec.message(), ")");
            std::string name = f->path().filename().string();
            if (name.empty() || name[0] == '.' || !has_image_extension(name)) continue;
            if (f->is_directory(ec)) continue;
            files.push_back(name);
        }
        std::sort(files.begin(), files.end());
        for (auto& name : files) {
            index.paths.push_back((dir / name).string());
            index.labels.push_back((int64_t)label);
        }
    }
    CNX_CHECK(!index.paths.empty(), "image folder ", root, ": no images (.jpg .jpeg .png .bmp) in its ",
              index.classes.size(), " class folders");
    return index;
}

SplitData read_split_data(const std::string& root, const SplitOptions& opts) {
    CNX_CHECK(opts.val_rate >= 0 && opts.val_rate < 1, "read_split_data: val_rate must be in [0, 1), got ",
              opts.val_rate);
    ImageFolderIndex index = scan_image_folder(root);
    SplitData split;
    split.classes = index.classes;

    Generator gen(opts.seed);
    const int64_t num_classes = (int64_t)index.classes.size();
    std::vector<int64_t> per_class_train(num_classes, 0), per_class_val(num_classes, 0);
    size_t begin = 0;
    for (int64_t label = 0; label < num_classes; ++label) {
        size_t end = begin;
        while (end < index.paths.size() && index.labels[end] == label) ++end;
        const int64_t n = (int64_t)(end - begin);
        const int64_t k = (int64_t)(n * opts.val_rate);
        // Partial Fisher-Yates: the first k of a random permutation, i.e. a sample without replacement.
        std::vector<int64_t> order(n);
        for (int64_t i = 0; i < n; ++i) order[i] = i;
        for (int64_t i = 0; i < k; ++i) std::swap(order[i], order[i + (int64_t)gen.randint(n - i)]);
        std::vector<char> is_val(n, 0);
        for (int64_t i = 0; i < k; ++i) is_val[order[i]] = 1;
        for (int64_t i = 0; i < n; ++i) {
            const std::string& p = index.paths[begin + i];
            if (is_val[i]) {
                split.val_paths.push_back(p);
                split.val_labels.push_back(label);
            } else {
                split.train_paths.push_back(p);
                split.train_labels.push_back(label);
            }
        }
        per_class_val[label] = k;
        per_class_train[label] = n - k;
        begin = end;
    }

    if (opts.log) {
        std::ostream& os = *opts.log;
        os << index.paths.size() << " images were found in the dataset.\n";
        os << split.train_paths.size() << " images for training.\n";
        os << split.val_paths.size() << " images for validation.\n";
        for (int64_t c = 0; c < num_classes; ++c)
            os << "  " << c << " " << index.classes[c] << ": " << per_class_train[c] + per_class_val[c] << " ("
               << per_class_train[c] << " train, " << per_class_val[c] << " val)\n";
    }
    CNX_CHECK(!split.train_paths.empty(), "read_split_data: ", root, ": no training images left after the split");
    CNX_CHECK(opts.val_rate == 0 || !split.val_paths.empty(), "read_split_data: ", root, ": val_rate ", opts.val_rate,
              " selects no validation image (int(n * val_rate) is 0 for every class); add images or use val_rate 0");
    if (!opts.class_indices_path.empty()) write_class_indices(opts.class_indices_path, index.classes);
    return split;
}

std::string class_indices_json(const std::vector<std::string>& classes) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    for (size_t i = 0; i < classes.size(); ++i) j[std::to_string(i)] = classes[i];
    // ensure_ascii, like json.dumps's default.
    return j.dump(4, ' ', true);  // ordered_json (insertion order): not core/json.h's json
}

void write_class_indices(const std::string& path, const std::vector<std::string>& classes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    CNX_CHECK(f.good(), "cannot write ", path);
    f << class_indices_json(classes);
    f.close();
    CNX_CHECK(!f.fail(), "cannot write ", path);
}

std::vector<std::string> read_class_indices(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    CNX_CHECK(f.good(), "class indices ", path, ": cannot open");
    nlohmann::json j;
    try {
        j = parse_json(f);
    } catch (const std::exception& e) {
        fail("class indices ", path, ": not valid JSON (", e.what(), ")");
    }
    CNX_CHECK(j.is_object() && !j.empty(), "class indices ", path, ": expected an object {\"0\": \"name\", ...}");
    std::vector<std::string> names(j.size());
    std::vector<char> seen(j.size(), 0);
    for (auto& [key, value] : j.items()) {
        size_t pos = 0;
        long long idx = -1;
        try {
            idx = std::stoll(key, &pos);
        } catch (const std::exception&) {
            pos = 0;
        }
        CNX_CHECK(pos == key.size() && idx >= 0 && idx < (long long)names.size() && !seen[idx], "class indices ",
                  path, ": key \"", key, "\" is not an index 0..", names.size() - 1, " (or repeats)");
        CNX_CHECK(value.is_string(), "class indices ", path, ": value of \"", key, "\" is not a string");
        names[idx] = value.get<std::string>();
        seen[idx] = 1;
    }
    return names;
}

}  // namespace cnx::data
