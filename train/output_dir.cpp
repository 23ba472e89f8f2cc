#include "train/output_dir.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace cnx::train {
namespace fs = std::filesystem;

void ensure_writable_dir(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    CNX_CHECK(fs::is_directory(dir), "output folder '", dir, "' cannot be created",
              ec ? ": " + ec.message() : std::string());
    std::string probe = (fs::path(dir) / ".write_test").string();
    FILE* f = std::fopen(probe.c_str(), "wb");
    CNX_CHECK(f, "output folder '", dir, "' is not writable: ", std::strerror(errno));
    bool ok = std::fwrite("ok", 1, 2, f) == 2 && std::fflush(f) == 0;
    ok = std::fclose(f) == 0 && ok;
    std::remove(probe.c_str());
    CNX_CHECK(ok, "output folder '", dir, "' is not writable (disk full?)");
}

void prepare_output_dir(const std::string& dir, bool resume, bool overwrite) {
    ensure_writable_dir(dir);
    const std::string ckpt_path = (fs::path(dir) / "checkpoint.safetensors").string();
    if (resume)
        CNX_CHECK(fs::exists(ckpt_path), "--resume: no checkpoint at '", ckpt_path, "'");
    else
        CNX_CHECK(overwrite || !fs::exists(ckpt_path), "'", dir,
                  "' already holds a training run (checkpoint.safetensors): continue it with --resume, or "
                  "start afresh with --overwrite, or choose another --out");
}

void ensure_free_space(const std::string& dir, const RunFiles& files) {
    struct statvfs fsinfo;
    if (::statvfs(dir.c_str(), &fsinfo) != 0) return;  // cannot tell; the writes report it themselves
    const uint64_t free_bytes = (uint64_t)fsinfo.f_bavail * fsinfo.f_frsize;
    const uint64_t largest = std::max(files.checkpoint, files.weights);
    uint64_t needed = files.checkpoint + files.weights + files.ema_weights + largest + (1u << 20);
    uint64_t reusable = 0;
    for (const char* name : {"checkpoint.safetensors", "best.safetensors", "ema.safetensors"}) {
        std::error_code ec;
        const auto size = fs::file_size(fs::path(dir) / name, ec);
        if (!ec) reusable += size;
    }
    needed = needed > reusable ? needed - reusable : 0;
    auto mb = [](uint64_t b) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
        return std::string(buf);
    };
    CNX_CHECK(free_bytes >= needed, "output folder '", dir, "' has ", mb(free_bytes), " free, but the run needs about ",
              mb(needed), " more there (a ", mb(files.checkpoint),
              " checkpoint, written beside the previous one before it replaces it, and ",
              mb(files.weights + files.ema_weights), " of weights): free some space or choose another --out");
}

}  // namespace cnx::train
