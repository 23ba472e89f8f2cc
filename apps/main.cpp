// convnext: the command-line front end. Subcommands live in apps/cmd_*.cpp.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <iostream>

#include "apps/command.h"
#include "core/error.h"
#include "core/threads.h"

namespace cnx::app {
std::vector<CommandEntry>& command_registry() {
    static std::vector<CommandEntry> r;
    return r;
}
bool stderr_is_tty() { return isatty(fileno(stderr)) != 0; }
}  // namespace cnx::app

int main(int argc, char** argv) {
    CLI::App app{"convnext.cpp: train, evaluate and run ConvNeXt models on the CPU"};
    app.require_subcommand(1);
    app.fallthrough();  // global options may follow the subcommand
    int threads = 0;
    app.add_option("--threads", threads, "Threads for OpenMP and OpenBLAS (default: all cores)");

    auto& registry = cnx::app::command_registry();
    std::sort(registry.begin(), registry.end(),
              [](const cnx::app::CommandEntry& a, const cnx::app::CommandEntry& b) { return a.name < b.name; });
    std::vector<std::pair<CLI::App*, std::function<int()>>> runners;
    try {
        for (auto& entry : registry) {
            auto run = entry.setup(app);
            runners.push_back({app.get_subcommand(entry.name), run});
        }
    } catch (const std::exception& e) {
        std::cerr << "error: setting up commands: " << e.what() << "\n";
        return 1;
    }

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        return code == 0 ? 0 : 2;
    }

    try {
        cnx::set_num_threads(threads);
        for (auto& [sub, run] : runners)
            if (sub->parsed()) return run();
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        return code == 0 ? 0 : 2;
    } catch (const cnx::Error& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    } catch (const std::bad_alloc&) {
        std::cerr << "error: out of memory\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
