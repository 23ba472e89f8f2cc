#include "viz/font.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "core/error.h"

// stb_truetype trusts its font file (offsets are not bounds-checked): only fonts the user or the
// system installed are loaded, never a file that came with the data.
#define STB_TRUETYPE_IMPLEMENTATION
#define STBTT_STATIC
#include <stb/stb_truetype.h>
#include <stb/stb_easy_font.h>

namespace cnx::viz {

struct Font::TrueType {
    std::vector<unsigned char> data;
    stbtt_fontinfo info{};
};

namespace {

// Where distributions install DejaVu Sans (Debian/Ubuntu first: scripts/setup.sh installs it).
const char* const kFontPaths[] = {
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
};

// Code points of UTF-8 text; a malformed byte becomes '?'.
std::vector<uint32_t> decode_utf8(const std::string& s) {
    std::vector<uint32_t> out;
    for (size_t i = 0; i < s.size();) {
        const unsigned char c = (unsigned char)s[i];
        int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        uint32_t cp = extra == 0 ? c : extra == 1 ? c & 0x1F : extra == 2 ? c & 0x0F : c & 0x07;
        bool ok = extra >= 0;
        for (int k = 1; ok && k <= extra; ++k) {
            if (i + k >= s.size() || ((unsigned char)s[i + k] >> 6) != 2) ok = false;
            else cp = cp << 6 | ((unsigned char)s[i + k] & 0x3F);
        }
        out.push_back(ok ? cp : '?');
        i += ok ? extra + 1 : 1;
    }
    return out;
}

// The built-in font's quads are drawn on a 12-unit line (stb_easy_font's line advance): about
// 8 units above the baseline, the rest for descenders.
constexpr float kBuiltinLine = 12.0f, kBuiltinAscent = 8.0f;

std::string ascii_only(const std::string& s) {
    std::string out;
    for (uint32_t cp : decode_utf8(s)) out.push_back(cp >= 32 && cp < 127 ? (char)cp : '?');
    return out;
}

}  // namespace

Font::~Font() = default;

std::shared_ptr<Font> Font::load(const std::string& ttf_path) {
    std::ifstream f(ttf_path, std::ios::binary);
    CNX_CHECK(f, "font: cannot open '", ttf_path, "'");
    auto tt = std::make_unique<TrueType>();
    tt->data.assign(std::istreambuf_iterator<char>(f), {});
    const int offset = stbtt_GetFontOffsetForIndex(tt->data.data(), 0);
    CNX_CHECK(tt->data.size() >= 12 && offset >= 0 && stbtt_InitFont(&tt->info, tt->data.data(), offset),
              "font: '", ttf_path, "' is not a TrueType font");
    std::shared_ptr<Font> font(new Font());
    font->ttf_ = std::move(tt);
    font->path_ = ttf_path;
    return font;
}

std::shared_ptr<Font> Font::builtin() { return std::shared_ptr<Font>(new Font()); }

const Font& Font::active() {
    static const std::shared_ptr<Font> font = [] {
        if (const char* env = std::getenv("CONVNEXT_FONT"); env && *env)
            return std::string(env) == "builtin" ? builtin() : load(env);  // asked for: errors are errors
        for (const char* p : kFontPaths)
            if (std::ifstream(p).good()) return load(p);
        return builtin();
    }();
    return *font;
}

std::string Font::warning() const {
    if (ttf_) return "";
    return "no TrueType font found (install fonts-dejavu-core, or set CONVNEXT_FONT to a .ttf file); text is drawn "
           "in the built-in segment font";
}

TextMask Font::render(const std::string& utf8, float pixel_height) const {
    CNX_CHECK(pixel_height >= 1 && pixel_height <= 1000, "font: text size ", pixel_height, " px out of range");
    TextMask m;
    if (!ttf_) {
        std::string text = ascii_only(utf8);
        const float s = pixel_height / kBuiltinLine;
        m.height = (int)std::ceil(pixel_height);
        m.baseline = (int)std::lround(kBuiltinAscent * s);
        m.width = std::max(1, (int)std::ceil(stb_easy_font_width(text.data()) * s));
        m.alpha.assign((size_t)m.width * m.height, 0);
        std::vector<char> quads(text.size() * 400 + 64);
        const int n = stb_easy_font_print(0, 0, text.data(), nullptr, quads.data(), (int)quads.size());
        for (int q = 0; q < n; ++q) {
            float x0 = 1e9f, y0 = 1e9f, x1 = -1e9f, y1 = -1e9f;
            for (int v = 0; v < 4; ++v) {
                const float* p = reinterpret_cast<const float*>(quads.data() + (q * 4 + v) * 16);
                x0 = std::min(x0, p[0]), x1 = std::max(x1, p[0]);
                y0 = std::min(y0, p[1]), y1 = std::max(y1, p[1]);
            }
            const int px0 = (int)std::floor(x0 * s), px1 = std::max(px0 + 1, (int)std::lround(x1 * s));
            const int py0 = (int)std::floor(y0 * s), py1 = std::max(py0 + 1, (int)std::lround(y1 * s));
            for (int y = std::max(0, py0); y < std::min(m.height, py1); ++y)
                for (int x = std::max(0, px0); x < std::min(m.width, px1); ++x) m.alpha[(size_t)y * m.width + x] = 255;
        }
        return m;
    }
    const stbtt_fontinfo& info = ttf_->info;
    const float scale = stbtt_ScaleForPixelHeight(&info, pixel_height);
    int ascent = 0, descent = 0, gap = 0;
    stbtt_GetFontVMetrics(&info, &ascent, &descent, &gap);
    m.baseline = (int)std::ceil(ascent * scale);
    m.height = m.baseline + (int)std::ceil(-descent * scale);
    const int missing = stbtt_FindGlyphIndex(&info, '?');
    struct Placed {
        int glyph;
        float x;
    };
    std::vector<Placed> placed;
    float x = 0;
    int prev = 0, right = 1;
    for (uint32_t cp : decode_utf8(utf8)) {
        int g = stbtt_FindGlyphIndex(&info, (int)cp);
        if (g == 0) g = missing;
        if (prev) x += scale * stbtt_GetGlyphKernAdvance(&info, prev, g);
        placed.push_back({g, x});
        int advance = 0, lsb = 0, bx0, by0, bx1, by1;
        stbtt_GetGlyphHMetrics(&info, g, &advance, &lsb);
        stbtt_GetGlyphBitmapBoxSubpixel(&info, g, scale, scale, x - std::floor(x), 0, &bx0, &by0, &bx1, &by1);
        right = std::max(right, (int)std::floor(x) + bx1);
        x += scale * advance;
        prev = g;
    }
    m.width = std::max(right, (int)std::ceil(x));
    m.alpha.assign((size_t)m.width * m.height, 0);
    std::vector<unsigned char> glyph;
    for (const Placed& p : placed) {
        const float shift = p.x - std::floor(p.x);
        int bx0, by0, bx1, by1;
        stbtt_GetGlyphBitmapBoxSubpixel(&info, p.glyph, scale, scale, shift, 0, &bx0, &by0, &bx1, &by1);
        const int gw = bx1 - bx0, gh = by1 - by0;
        if (gw <= 0 || gh <= 0) continue;  // a space
        glyph.assign((size_t)gw * gh, 0);
        stbtt_MakeGlyphBitmapSubpixel(&info, glyph.data(), gw, gh, gw, scale, scale, shift, 0, p.glyph);
        const int ox = (int)std::floor(p.x) + bx0, oy = m.baseline + by0;
        for (int y = 0; y < gh; ++y)
            for (int gx = 0; gx < gw; ++gx) {
                const int tx = ox + gx, ty = oy + y;
                if (tx < 0 || ty < 0 || tx >= m.width || ty >= m.height) continue;
                uint8_t& a = m.alpha[(size_t)ty * m.width + tx];
                a = std::max(a, glyph[(size_t)y * gw + gx]);  // touching glyphs: the darker wins
            }
    }
    return m;
}

int Font::text_width(const std::string& utf8, float pixel_height) const {
    if (!ttf_) {
        std::string text = ascii_only(utf8);
        return (int)std::ceil(stb_easy_font_width(text.data()) * pixel_height / kBuiltinLine);
    }
    return render(utf8, pixel_height).width;
}

}  // namespace cnx::viz
