#pragma once
// Helpers for the tests that drive the `convnext` command line: run it and capture its output,
// start it in the background, fixtures, per-process temporary folders, file contents.
#include <catch2/catch.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/json.h"

namespace cli_test {

namespace fs = std::filesystem;

struct RunResult {
    int code;  // the exit status, or -1 when a signal ended it
    std::string output;  // stdout and stderr together
};

// Runs a shell command line and waits for it; its output is stdout, with stderr unless
// `with_stderr` is false (then stderr passes through to the test's own).
inline RunResult shell(const std::string& command, bool with_stderr = true) {
    std::string cmd = with_stderr ? command + " 2>&1" : command;
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int status = pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// Runs `convnext ARGS` (a shell command line, so ARGS may redirect) and waits for it.
inline RunResult run(const std::string& args, bool with_stderr = true) {
    return shell(std::string(CONVNEXT_CLI) + " " + args, with_stderr);
}

// Starts `convnext ARGS` with its output going to `log`; returns its pid (reap with finish()).
inline pid_t start(const std::string& args, const fs::path& log) {
    std::string cmd = "exec " + std::string(CONVNEXT_CLI) + " " + args + " > " + log.string() + " 2>&1";
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
        _exit(127);
    }
    return pid;
}

// Waits up to `limit` for a started process; kills it if it is still running then. Returns
// its exit status (-1 for a signal, including that kill).
inline int finish(pid_t pid, std::chrono::seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline std::string fixture(const std::string& name) {
    return std::string(CONVNEXT_SOURCE_DIR) + "/tests/fixtures/" + name;
}

// An empty folder under the system temp dir, unique to this process and `name`.
inline fs::path temp_dir(const std::string& name) {
    fs::path d = fs::temp_directory_path() / ("convnext_test_" + name + "_" + std::to_string(getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

inline std::string read_bytes(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

inline std::vector<nlohmann::json> read_jsonl(const fs::path& p) {
    std::ifstream f(p);
    std::vector<nlohmann::json> out;
    std::string line;
    while (std::getline(f, line))
        if (!line.empty()) out.push_back(cnx::parse_json(line));
    return out;
}

// The micro ConvNeXt the CLI tests train on tests/fixtures/train_folder in well under a second.
inline const std::string kMicro =
    "--model convnext_atto --depths 1,1,1,1 --dims 8,16,32,64 --image-size 32 --crop-pct 1 ";

}  // namespace cli_test
