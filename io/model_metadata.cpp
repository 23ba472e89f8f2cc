#include "io/model_metadata.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json.h"
#include "io/weights.h"

namespace cnx::io {
namespace {

using json = nlohmann::json;

struct Reader {
    const Metadata& md;
    const std::string& source;

    const std::string* find(const char* key) const {
        auto it = md.find(key);
        return it == md.end() ? nullptr : &it->second;
    }
    [[noreturn]] void bad(const char* key, const char* want) const {
        fail("weights '", source, "': metadata '", key, "' is not ", want, " (\"", *find(key), "\")");
    }
    template <class T>
    void list(const char* key, std::vector<T>& out, const char* want) const {
        const std::string* v = find(key);
        if (!v) return;
        json j = parse_json_or_discarded(*v);
        if (!j.is_array()) bad(key, want);
        out.clear();
        for (auto& e : j) {
            if constexpr (std::is_same_v<T, std::string>) {
                if (!e.is_string()) bad(key, want);
            } else {
                if (!e.is_number()) bad(key, want);
            }
            out.push_back(e.get<T>());
        }
    }
    void integer(const char* key, int64_t& out) const {
        const std::string* v = find(key);
        if (!v) return;
        size_t used = 0;
        long long x = 0;
        try {
            x = std::stoll(*v, &used);
        } catch (const std::exception&) {
            bad(key, "a positive integer");
        }
        if (used != v->size() || x <= 0) bad(key, "a positive integer");
        out = x;
    }
    void number(const char* key, double& out) const {
        const std::string* v = find(key);
        if (!v) return;
        size_t used = 0;
        double x = 0;
        try {
            x = std::stod(*v, &used);
        } catch (const std::exception&) {
            bad(key, "a number in (0, 1]");
        }
        if (used != v->size() || !(x > 0 && x <= 1)) bad(key, "a number in (0, 1]");
        out = x;
    }
};

std::string number_str(double v) {
    json j = v;  // shortest text that reads back the same
    return dump_json(j);
}

}  // namespace

int64_t ModelMetadata::eval_resize() const {
    if (resize > 0) return resize;
    if (image_size > 0 && crop_pct > 0) return (int64_t)std::floor(image_size / crop_pct);
    return 0;
}

ModelMetadata parse_model_metadata(const Metadata& metadata, const std::string& source) {
    ModelMetadata m;
    auto it = metadata.find("model");
    if (it == metadata.end() || it->second.empty()) return m;
    m.model = it->second;
    Reader r{metadata, source};
    r.list("depths", m.depths, "a list of four integers");
    r.list("dims", m.dims, "a list of four integers");
    if (!m.depths.empty() && (m.depths.size() != 4 || *std::min_element(m.depths.begin(), m.depths.end()) < 0))
        r.bad("depths", "a list of four integers >= 0");
    if (!m.dims.empty() && (m.dims.size() != 4 || *std::min_element(m.dims.begin(), m.dims.end()) <= 0))
        r.bad("dims", "a list of four positive integers");
    r.integer("num_classes", m.num_classes);
    r.integer("in_chans", m.in_chans);
    r.integer("image_size", m.image_size);
    r.integer("resize", m.resize);
    r.number("crop_pct", m.crop_pct);
    r.list("mean", m.mean, "a list of numbers");
    r.list("std", m.std, "a list of numbers");
    for (float s : m.std)
        if (!(s > 0)) r.bad("std", "a list of positive numbers");
    if (!m.mean.empty() && m.mean.size() != m.std.size()) r.bad("mean", "as long as 'std'");
    r.list("classes", m.classes, "a list of strings");
    // A head larger than the data's classes (train --num-classes) names only the first ones.
    if (m.num_classes > 0 && (int64_t)m.classes.size() > m.num_classes)
        r.bad("classes", ("a list of at most num_classes = " + std::to_string(m.num_classes) + " names").c_str());
    return m;
}

ModelMetadata read_model_metadata(const std::string& path) {
    if (is_pth_file(path)) return {};
    return parse_model_metadata(read_safetensors_header(path).metadata, path);
}

Metadata to_metadata(const ModelMetadata& m) {
    Metadata md;
    if (m.model.empty()) return md;
    md["model"] = m.model;
    if (!m.depths.empty()) md["depths"] = dump_json(json(m.depths));
    if (!m.dims.empty()) md["dims"] = dump_json(json(m.dims));
    if (m.num_classes > 0) md["num_classes"] = std::to_string(m.num_classes);
    if (m.in_chans > 0) md["in_chans"] = std::to_string(m.in_chans);
    if (m.image_size > 0) md["image_size"] = std::to_string(m.image_size);
    if (m.resize > 0) md["resize"] = std::to_string(m.resize);
    if (m.crop_pct > 0) md["crop_pct"] = number_str(m.crop_pct);
    if (!m.mean.empty()) md["mean"] = dump_json(json(m.mean));
    if (!m.std.empty()) md["std"] = dump_json(json(m.std));
    if (!m.classes.empty()) md["classes"] = dump_json(json(m.classes));
    return md;
}

}  // namespace cnx::io
