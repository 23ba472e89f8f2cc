// The documentation stays true to the tree: every relative link in README.md, docs/ and
// examples/ points to a file that exists (and to a heading that exists, for an #anchor), every
// docs page is reachable from the README, the README stays short, and every `convnext <command>
// --option` written in a code span or block names a command and an option the CLI has.
#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <sstream>

#include "cli_util.h"

namespace {

namespace fs = std::filesystem;
using cli_test::read_bytes;

const fs::path kRoot = CONVNEXT_SOURCE_DIR;

std::vector<fs::path> documents() {
    std::vector<fs::path> files{kRoot / "README.md", kRoot / "BENCHMARKS.md"};
    for (const fs::path& dir : {kRoot / "docs", kRoot / "examples"})
        for (auto& e : fs::recursive_directory_iterator(dir))
            if (e.is_regular_file() && e.path().extension() == ".md") files.push_back(e.path());
    std::sort(files.begin() + 2, files.end());
    return files;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
}

bool is_fence(const std::string& line) { return line.rfind("```", 0) == 0; }

// A Markdown file split into what is prose and what is code: `prose` has the file's lines with
// fenced blocks and `code spans` blanked out (so a link inside code is not a link), `code` holds
// every code span (joined across lines) and every line of a fenced block (a trailing '\'
// continues it). A code span ends at a blank line at the latest, so one stray backtick cannot
// swallow the rest of a file.
struct Parsed {
    std::vector<std::string> prose;
    std::vector<std::string> code;
};

Parsed parse(const fs::path& md) {
    Parsed out;
    bool fence = false, span = false;
    std::string code, pending;
    for (auto& line : lines_of(read_bytes(md))) {
        if (is_fence(line) || fence) {
            out.prose.emplace_back();
            if (is_fence(line)) {
                fence = !fence;
                continue;
            }
            pending += line;
            if (!pending.empty() && pending.back() == '\\') {
                pending.back() = ' ';
                continue;
            }
            out.code.push_back(pending);
            pending.clear();
            continue;
        }
        if (line.find_first_not_of(" \t") == std::string::npos) span = false, code.clear();
        std::string prose;
        for (char c : line) {
            if (c == '`') {
                if (span) out.code.push_back(code);
                span = !span;
                code.clear();
                prose += ' ';
            } else if (span) {
                code += c;
                prose += ' ';
            } else {
                prose += c;
            }
        }
        if (span) code += ' ';
        out.prose.push_back(prose);
    }
    return out;
}

// GitHub's anchor for a heading: lower case, spaces to '-', ASCII punctuation other than '-' and
// '_' dropped. Non-ASCII bytes are dropped too (GitHub keeps non-ASCII letters; no heading a link
// points to has one).
std::string slug(const std::string& heading) {
    std::string s;
    for (unsigned char c : heading) {
        if (std::isalnum(c) || c == '-' || c == '_')
            s += (char)std::tolower(c);
        else if (c == ' ')
            s += '-';
    }
    return s;
}

std::set<std::string> anchors(const fs::path& md) {
    std::set<std::string> out;
    std::map<std::string, int> seen;
    bool fence = false;
    for (auto& line : lines_of(read_bytes(md))) {
        if (is_fence(line)) fence = !fence;
        if (fence || line.empty() || line[0] != '#') continue;
        size_t text = line.find_first_not_of('#');
        if (text == std::string::npos || line[text] != ' ') continue;
        std::string s = slug(line.substr(text + 1));
        int n = seen[s]++;
        out.insert(n == 0 ? s : s + "-" + std::to_string(n));
    }
    return out;
}

struct Link {
    int line;
    std::string target;
};

// Every [text](target) and ![alt](target) outside code.
std::vector<Link> links(const fs::path& md) {
    std::vector<Link> out;
    auto prose = parse(md).prose;
    for (size_t i = 0; i < prose.size(); ++i) {
        const std::string& l = prose[i];
        for (size_t p = l.find("]("); p != std::string::npos; p = l.find("](", p + 2)) {
            size_t end = l.find(')', p + 2);
            if (end == std::string::npos) break;
            out.push_back({(int)i + 1, l.substr(p + 2, end - p - 2)});
        }
    }
    return out;
}

bool is_external(const std::string& target) {
    size_t colon = target.find(':');
    return colon != std::string::npos && colon < target.find('/');  // https:, mailto:
}

}  // namespace

TEST_CASE("every relative link and anchor in README.md, docs/ and examples/ resolves") {
    std::map<fs::path, std::set<std::string>> anchor_cache;
    int checked = 0;
    for (auto& md : documents())
        for (auto& link : links(md)) {
            if (is_external(link.target)) continue;
            const size_t hash = link.target.find('#');
            const std::string path = link.target.substr(0, hash);
            const fs::path target = path.empty() ? md : (md.parent_path() / path).lexically_normal();
            INFO(fs::relative(md, kRoot).string() << ":" << link.line << ": " << link.target);
            REQUIRE(fs::exists(target));
            if (hash != std::string::npos && target.extension() == ".md") {
                if (!anchor_cache.count(target)) anchor_cache[target] = anchors(target);
                CHECK(anchor_cache[target].count(link.target.substr(hash + 1)) == 1);
            }
            ++checked;
        }
    CHECK(checked > 100);  // the scan found the links at all
}

TEST_CASE("every docs page is linked from the README, which stays within 300 lines") {
    const std::string readme = read_bytes(kRoot / "README.md");
    std::set<std::string> linked;
    for (auto& link : links(kRoot / "README.md")) linked.insert(link.target.substr(0, link.target.find('#')));
    for (auto& e : fs::directory_iterator(kRoot / "docs")) {
        if (e.path().extension() != ".md") continue;
        const std::string page = "docs/" + e.path().filename().string();
        INFO(page);
        CHECK(linked.count(page) == 1);
    }
    CHECK(lines_of(readme).size() <= 300);
}

TEST_CASE("every `convnext <command> --option` in the documents exists in the CLI") {
    // Each command's options, from its --help (CLI11 prints every option there), plus the
    // global ones.
    const std::string top = cli_test::run("--help").output;
    const size_t subcommands = top.find("Subcommands:");
    REQUIRE(subcommands != std::string::npos);
    auto options_in = [](const std::string& help) {
        std::set<std::string> opts;
        for (size_t p = help.find("--"); p != std::string::npos; p = help.find("--", p + 2)) {
            size_t e = p + 2;
            while (e < help.size() && (std::isalnum((unsigned char)help[e]) || help[e] == '-')) ++e;
            opts.insert(help.substr(p, e - p));
        }
        return opts;
    };
    const std::set<std::string> global = options_in(top.substr(0, subcommands));
    std::map<std::string, std::set<std::string>> commands;
    for (auto& line : lines_of(top.substr(subcommands))) {
        if (line.rfind("  ", 0) != 0) continue;
        std::string name;
        std::istringstream(line) >> name;
        commands[name] = options_in(cli_test::run(name + " --help").output);
    }
    REQUIRE(commands.count("train") == 1);

    // Command lines: fenced blocks and code spans.
    int checked = 0;
    for (auto& md : documents()) {
        const std::vector<std::string> code = parse(md).code;
        for (auto& c : code) {
            std::istringstream in(c);
            std::vector<std::string> words;
            for (std::string w; in >> w;) words.push_back(w);
            for (size_t i = 0; i + 1 < words.size(); ++i) {
                const std::string& w = words[i];
                if (w != "convnext" && (w.size() < 9 || w.compare(w.size() - 9, 9, "/convnext") != 0)) continue;
                size_t k = i + 1;
                while (k + 1 < words.size() && global.count(words[k])) k += 2;  // convnext --threads 2 train
                const std::string& command = words[k];
                if (command.rfind("--", 0) == 0 || !std::islower((unsigned char)command[0])) continue;
                INFO(fs::relative(md, kRoot).string() << ": " << c);
                REQUIRE(commands.count(command) == 1);
                for (size_t j = k + 1; j < words.size(); ++j) {
                    // The command ends at a comment, a ';' or '&&', or a pipe (a '|' between
                    // options is a synopsis's "or").
                    if (words[j] == "#" || words[j] == ";" || words[j] == "&&") break;
                    if (words[j] == "|" && (j + 1 == words.size() || words[j + 1].rfind("--", 0) != 0)) break;
                    const size_t start = words[j].find_first_not_of("[(");
                    if (start == std::string::npos) continue;
                    std::string opt = words[j].substr(start);
                    opt = opt.substr(0, opt.find_first_of("=,)];"));
                    if (opt.rfind("--", 0) == 0 && opt.size() > 2) {
                        INFO("option " << opt);
                        CHECK((commands[command].count(opt) == 1 || global.count(opt) == 1));
                        ++checked;
                    }
                    if (words[j].back() == ';') break;
                }
            }
        }
    }
    CHECK(checked > 50);
}
