#pragma once
// Text for the pictures (Grad-CAM overlays need none; the confusion-matrix plot and the
// prediction grid label classes).
//
// Why a TrueType font through stb_truetype rather than a glyph table written out in the source:
// class names are arbitrary (ImageFolder folder names, "T-shirt/top", accents), labels need
// several sizes, and anti-aliased text at 11-16 px is what makes a confusion matrix readable.
// stb_truetype comes with libstb-dev, which the project already uses for image decoding, and
// DejaVu Sans (fonts-dejavu-core, installed by scripts/setup.sh) covers Latin, Greek and
// Cyrillic. Nothing is bundled: the font is found at run time.
//
// Lookup: $CONVNEXT_FONT (a .ttf path; "builtin" forces the fallback), then DejaVu Sans where
// Debian, Fedora and Arch install it. When none is found the pictures are still written, with
// stb_easy_font's built-in segment font (ASCII, blocky, also from libstb-dev) scaled to size,
// and Font::active().warning() says how to get the real one.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cnx::viz {

// A line of text rendered as coverage (0 = background, 255 = ink), `height` rows of which row
// `baseline` is the baseline.
struct TextMask {
    int width = 0, height = 0, baseline = 0;
    std::vector<uint8_t> alpha;  // row-major, width x height
};

class Font {
public:
    // The process-wide font, looked up once (see above). Thread-safe.
    static const Font& active();
    // A TrueType file (.ttf, or the first face of a .ttc); throws naming the file when it cannot
    // be read or parsed.
    static std::shared_ptr<Font> load(const std::string& ttf_path);
    // stb_easy_font's segment font.
    static std::shared_ptr<Font> builtin();

    ~Font();
    Font(const Font&) = delete;
    Font& operator=(const Font&) = delete;

    bool is_truetype() const { return ttf_ != nullptr; }
    const std::string& path() const { return path_; }  // "" for the built-in font
    // Empty for a TrueType font; otherwise one line telling how to install one.
    std::string warning() const;

    // UTF-8 text on one line at a pixel height (ascent + descent); characters the font lacks
    // (and every non-ASCII one in the built-in font) are drawn as '?'.
    TextMask render(const std::string& utf8, float pixel_height) const;
    int text_width(const std::string& utf8, float pixel_height) const;

private:
    Font() = default;
    struct TrueType;
    std::unique_ptr<TrueType> ttf_;
    std::string path_;
};

}  // namespace cnx::viz
