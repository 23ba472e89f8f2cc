#pragma once
// nlohmann::json's parser and serializer, compiled once (core/json.cpp) instead of in every file
// that reads or writes JSON: each such file instantiated them anew, ~7 s (parse) and ~4 s (dump)
// of compile time per file in the sanitizer build, over twenty files. The rest of the json API
// (at, value, get, construction) is cheap to instantiate and is used directly.
#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

namespace cnx {

// nlohmann::json::parse(text): throws nlohmann::json::parse_error on invalid JSON.
nlohmann::json parse_json(const std::string& text);
nlohmann::json parse_json(std::istream& in);
// nlohmann::json::parse(text, nullptr, false): a value with is_discarded() on invalid JSON.
nlohmann::json parse_json_or_discarded(const std::string& text);
// j.dump(indent, indent_char, ensure_ascii).
std::string dump_json(const nlohmann::json& j, int indent = -1, char indent_char = ' ', bool ensure_ascii = false);

}  // namespace cnx
