// A full disk and a read-only output folder, on real filesystems: each case mounts a small tmpfs
// in a mount namespace of its own (as root, or as a user through a user namespace), so nothing
// outside this test process sees it and it goes away with the process. Where neither is allowed
// (a container without the capability), the case exits with 77, which CTest reports as skipped.
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstring>

#include "cli_util.h"
#include "io/safetensors.h"

using namespace cli_test;

namespace {

bool write_file(const char* path, const std::string& text) {
    int fd = ::open(path, O_WRONLY);
    if (fd < 0) return false;
    bool ok = ::write(fd, text.data(), text.size()) == (ssize_t)text.size();
    ::close(fd);
    return ok;
}

// Enters a private mount namespace; false (with the reason in `why`) when the system refuses.
bool enter_mount_namespace(std::string& why) {
    if (::geteuid() == 0) {
        if (::unshare(CLONE_NEWNS) != 0) return why = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno), false;
    } else {
        const uid_t uid = ::geteuid();
        const gid_t gid = ::getegid();
        if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            return why = std::string("unshare(CLONE_NEWUSER|CLONE_NEWNS): ") + std::strerror(errno), false;
        write_file("/proc/self/setgroups", "deny");
        if (!write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
            !write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1"))
            return why = "cannot map the user into the new user namespace", false;
    }
    // Our mounts must not propagate back to the parent namespace.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        return why = std::string("mount --make-rprivate /: ") + std::strerror(errno), false;
    return true;
}

// A tmpfs of `kib` KiB mounted on a fresh folder, visible to this process and its children.
fs::path small_tmpfs(const std::string& name, int kib, bool read_only = false) {
    static bool entered = false;
    std::string why;
    if (!entered && !(entered = enter_mount_namespace(why))) {
        std::printf("skipped: cannot mount a tmpfs here (%s)\n", why.c_str());
        std::exit(77);
    }
    fs::path dir = temp_dir("disk_" + name);
    const std::string opts = "size=" + std::to_string(kib) + "k";
    if (::mount("tmpfs", dir.c_str(), "tmpfs", read_only ? MS_RDONLY : 0, opts.c_str()) != 0) {
        std::printf("skipped: mount -t tmpfs on %s: %s\n", dir.c_str(), std::strerror(errno));
        std::exit(77);
    }
    return dir;
}

// Takes all the free space of the filesystem holding `path` (what another program filling the
// disk would do).
void fill(const fs::path& path) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    std::setvbuf(f, nullptr, _IONBF, 0);
    std::vector<char> block(4096, 1);
    while (std::fwrite(block.data(), 1, block.size(), f) == block.size()) {
    }
    for (int i = 0; i < 4096 && std::fwrite(block.data(), 1, 1, f) == 1; ++i) {
    }
    std::fclose(f);
}

std::vector<std::string> leftover_temp_files(const fs::path& dir) {
    std::vector<std::string> names;
    for (auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().find(".tmp") != std::string::npos) names.push_back(e.path().filename());
    return names;
}

const std::string kTrain = "train --data " + fixture("train_folder") + " " + kMicro +
                           "--batch-size 4 --lr 2e-3 --warmup-epochs 0 --val-rate 0.25 --seed 3 --show-predictions 0 ";

}  // namespace

TEST_CASE("disk full: an output filesystem too small for the run is refused before training") {
    fs::path disk = small_tmpfs("small", 256);
    auto r = run(kTrain + "--epochs 1 --out " + (disk / "run").string());
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("free, but the run needs about") != std::string::npos);
    CHECK(r.output.find((disk / "run").string()) != std::string::npos);
    CHECK(r.output.find("epoch 1/") == std::string::npos);  // no training started
    CHECK_FALSE(fs::exists(disk / "run" / "checkpoint.safetensors"));
}

TEST_CASE("disk full: a read-only output filesystem is refused before training (also as root)") {
    fs::path disk = small_tmpfs("readonly", 1024, true);
    auto r = run(kTrain + "--epochs 1 --out " + (disk / "run").string());
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("Read-only file system") != std::string::npos);
    CHECK(r.output.find((disk / "run").string()) != std::string::npos);
}

TEST_CASE("disk full at save time: the run stops naming the file, the last checkpoint intact, --resume goes on") {
    fs::path disk = small_tmpfs("full", 8192);
    fs::path out = disk / "run", log = temp_dir("disk_full_log") / "log.txt";
    // A checkpoint every step, for many epochs: the disk fills while the run is saving often.
    pid_t pid = start(kTrain + "--epochs 500 --checkpoint-every 1 --out " + out.string(), log);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!fs::exists(out / "checkpoint.safetensors") && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(fs::exists(out / "checkpoint.safetensors"));
    fill(disk / "filler");
    const int code = finish(pid, std::chrono::seconds(120));
    const std::string output = read_bytes(log);
    INFO(output);
    CHECK(code == 1);
    CHECK(output.find("No space left on device") != std::string::npos);
    CHECK(output.find("intact") != std::string::npos);
    CHECK(leftover_temp_files(out).empty());

    // The checkpoint on disk is whole: it loads, with its run state.
    auto ck = cnx::io::load_safetensors((out / "checkpoint.safetensors").string());
    const int64_t saved_step = std::stoll(ck.metadata.at("global_step"));
    CHECK(saved_step >= 1);

    // Space freed, the run continues from it.
    fs::remove(disk / "filler");
    auto r = run(kTrain + "--epochs 500 --stop-after-epochs 1 --out " + out.string() + " --resume");
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(r.output.find("resumed from") != std::string::npos);
    auto after = cnx::io::load_safetensors((out / "checkpoint.safetensors").string());
    CHECK(std::stoll(after.metadata.at("global_step")) > saved_step);
}
