#pragma once
// Git-style subcommands. Each apps/cmd_*.cpp defines a setup function that adds its subcommand
// and options to the root app and returns the function that runs it; a static registration line
// puts it in the CLI, so adding a command never edits main.cpp. The setup function's name is the
// command's own: the CLI is compiled as a unity build (batches of these files in one translation
// unit, so CLI11's header is compiled once per batch), where two `setup`s would clash.
//
//   static std::function<int()> setup_info(CLI::App& root) {
//       auto* cmd = root.add_subcommand("info", "...");
//       auto opts = std::make_shared<Options>(); cmd->add_option("--model", opts->model);
//       return [opts] { ...; return 0; };
//   }
//   CONVNEXT_COMMAND(info, setup_info)
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace cnx::app {

using CommandSetup = std::function<int()> (*)(CLI::App& root);

struct CommandEntry {
    std::string name;
    CommandSetup setup;
};

std::vector<CommandEntry>& command_registry();
inline bool register_command(const char* name, CommandSetup setup) {
    command_registry().push_back({name, setup});
    return true;
}

// True when stdout/stderr are a terminal (live progress bars vs. plain log lines).
bool stderr_is_tty();

}  // namespace cnx::app

#define CONVNEXT_COMMAND(NAME, SETUP) \
    static const bool convnext_command_registered_##NAME = ::cnx::app::register_command(#NAME, SETUP);
