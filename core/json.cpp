#include "core/json.h"

#include <istream>

namespace cnx {

nlohmann::json parse_json(const std::string& text) { return nlohmann::json::parse(text); }
nlohmann::json parse_json(std::istream& in) { return nlohmann::json::parse(in); }
nlohmann::json parse_json_or_discarded(const std::string& text) { return nlohmann::json::parse(text, nullptr, false); }
std::string dump_json(const nlohmann::json& j, int indent, char indent_char, bool ensure_ascii) {
    return j.dump(indent, indent_char, ensure_ascii);
}

}  // namespace cnx
