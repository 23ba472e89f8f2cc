#pragma once
// ImageFolder layout (root/<class>/<image>) and the classic train/validation split:
// read_split_data(root, val_rate=0.2) of the usual PyTorch classification scripts, with our
// seeded generator in place of Python's random module.
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace cnx::data {

struct ImageFolderIndex {
    std::string root;
    std::vector<std::string> classes;  // sorted subfolder names; label = position
    std::vector<std::string> paths;    // grouped by class, sorted by file name within a class
    std::vector<int64_t> labels;
};

// Classes are the sorted subfolders of `root`; images are files ending in .jpg .jpeg .png .bmp
// (any case). Other files, and names starting with '.', are ignored. Throws naming the folder
// when it is missing, has no class folders, or holds no image at all.
ImageFolderIndex scan_image_folder(const std::string& root);

// The extension test of the scan: ".jpg", ".JPEG", ".Png", ".bmp" ... -> true.
bool has_image_extension(const std::string& filename);

struct SplitOptions {
    double val_rate = 0.2;       // per class, int(n * val_rate) files go to validation; 0 = none
    uint64_t seed = 0;
    std::string class_indices_path = "class_indices.json";  // "" = don't write
    std::ostream* log = nullptr;  // counts are printed here when set
};

struct SplitData {
    std::vector<std::string> classes;
    std::vector<std::string> train_paths, val_paths;
    std::vector<int64_t> train_labels, val_labels;
};

// Per class, picks k = int(n * val_rate) files without replacement with Generator(seed) (one
// generator drawn from class after class), keeps the rest for training, prints the counts and
// writes class_indices.json as {"0": "daisy", ...} (indent 4, like json.dumps).
SplitData read_split_data(const std::string& root, const SplitOptions& opts = {});

// The class_indices.json text: ordered "0", "1", ... (not "0", "1", "10", "2"), indent 4,
// non-ASCII escaped, no trailing newline, exactly as Python's json.dumps(..., indent=4).
std::string class_indices_json(const std::vector<std::string>& classes);
void write_class_indices(const std::string& path, const std::vector<std::string>& classes);
// Reads it back: index -> name (indices must be 0..n-1).
std::vector<std::string> read_class_indices(const std::string& path);

}  // namespace cnx::data
