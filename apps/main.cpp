// convnext: the command-line front end. Subcommands live in apps/cmd_*.cpp.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>

#include "apps/command.h"
#include "core/error.h"
#include "core/threads.h"
#include "dist/dist.h"

namespace cnx::app {
std::vector<CommandEntry>& command_registry() {
    static std::vector<CommandEntry> r;
    return r;
}
bool stderr_is_tty() { return isatty(fileno(stderr)) != 0; }
}  // namespace cnx::app

namespace {

// GNU OpenMP busy-waits at barriers for ~300,000 iterations by default. When another process holds
// one of the cores, a spinning thread burns its time slice waiting for a descheduled peer and a
// training step becomes 20-60x slower (measured on 2 cores under load: 20 img/s instead of 1,280).
// A short spin keeps back-to-back parallel regions fast on an idle machine and sleeps otherwise.
// libgomp reads the setting when it is loaded, before main, so the CLI re-executes itself once
// with it; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT is left alone.
void set_openmp_spin(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
    setenv("GOMP_SPINCOUNT", "2000", 1);
    execv("/proc/self/exe", argv);  // on failure, carry on with the default policy
}

}  // namespace

int main(int argc, char** argv) {
    set_openmp_spin(argv);
    CLI::App app{"convnext.cpp: train, evaluate and run ConvNeXt models on the CPU"};
    app.require_subcommand(1);
    app.fallthrough();  // global options may follow the subcommand
    int threads = 0;
    app.add_option("--threads", threads,
                   "Threads for OpenMP and OpenBLAS (default: all cores, shared out among the ranks of an mpirun "
                   "job on this machine)");

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

    // MPI starts only after a successful parse: --help and usage errors are the same on every
    // rank and need no communication. From here on every exit path finalizes or aborts.
    try {
        cnx::dist::init(&argc, &argv);
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    struct Finalize {
        ~Finalize() { cnx::dist::finalize(); }
    } finalize;
    const int rank = cnx::dist::rank();
    auto report = [&](const std::string& msg) {
        std::cerr << "error: " << (cnx::dist::distributed() ? "rank " + std::to_string(rank) + ": " : "") << msg
                  << "\n";
        // One rank's error ends the whole job: the others would wait forever in the next collective.
        if (cnx::dist::distributed()) cnx::dist::abort(1);
        return 1;
    };
    try {
        if (threads <= 0 && cnx::dist::local_size() > 1)
            threads = std::max(1, cnx::hardware_threads() / cnx::dist::local_size());
        cnx::set_num_threads(threads);
        for (auto& [sub, run] : runners) {
            if (!sub->parsed()) continue;
            if (cnx::dist::distributed() && sub->get_name() != "train") {
                if (rank == 0)
                    std::cerr << "error: '" << sub->get_name() << "' runs in one process; only 'train' is "
                              << "data-parallel under mpirun (launch it without mpirun)\n";
                return 2;
            }
            return run();
        }
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        if (code != 0 && cnx::dist::distributed()) cnx::dist::abort(2);
        return code == 0 ? 0 : 2;
    } catch (const cnx::Error& e) {
        return report(e.what());
    } catch (const std::bad_alloc&) {
        return report("out of memory");
    } catch (const std::exception& e) {
        return report(e.what());
    }
    return 0;
}
