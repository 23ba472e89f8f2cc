#pragma once
// Errors carry a message naming the op and the shapes involved, so a user can see what went wrong
// without a debugger. The CLI prints them as "error: ..." and exits 1.
#include <sstream>
#include <stdexcept>
#include <string>

namespace cnx {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <class A, class... R>
void format_into(std::ostringstream& os, const A& a, const R&... r) {
    os << a;
    format_into(os, r...);
}
}  // namespace detail

template <class... A>
[[noreturn]] void fail(const A&... parts) {
    std::ostringstream os;
    detail::format_into(os, parts...);
    throw Error(os.str());
}

}  // namespace cnx

// CNX_CHECK(cond, "op: shapes ", a, " and ", b, " differ")
#define CNX_CHECK(cond, ...)                      \
    do {                                          \
        if (!(cond)) ::cnx::fail(__VA_ARGS__);    \
    } while (0)
