#include "canonical_json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "error.h"

namespace edgeexit {
namespace {

using Codes = std::u32string;  // a Python str: code points, lone surrogates included

[[noreturn]] void fail(const std::string& what, size_t at) {
  throw BundleError("manifest.json is not JSON the Python loader reads: " + what, "at byte " + std::to_string(at),
                    "the manifest edgeexit wrote", "the file was edited or damaged; rebuild the bundle");
}

// ensure_ascii=True: '"' and '\\' and \n \r \t \b \f escaped short, every other code point outside ' '..'~' as
// \uXXXX (lower-case hex), code points above U+FFFF as a surrogate pair.
void dump_string(const Codes& s, std::string& out) {
  static const char* hex = "0123456789abcdef";
  auto u = [&](uint32_t c) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += hex[(c >> shift) & 0xF];
  };
  out += '"';
  for (char32_t c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c >= 0x20 && c <= 0x7E) {
          out += char(c);
        } else if (c > 0xFFFF) {
          uint32_t v = uint32_t(c) - 0x10000;
          u(0xD800 | (v >> 10));
          u(0xDC00 | (v & 0x3FF));
        } else {
          u(uint32_t(c));
        }
    }
  }
  out += '"';
}

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  std::string document() {
    skip_ws();
    std::string out;
    value(out, 0, true);
    skip_ws();
    if (i_ != s_.size()) fail("extra data after the document", i_);
    return out;
  }

 private:
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }

  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }

  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'", i_);
    ++i_;
  }

  void value(std::string& out, int depth, bool top) {
    if (depth > kMaxDepth) fail("nested deeper than " + std::to_string(kMaxDepth) + " levels", i_);
    const char c = peek();
    if (c == '{') return object(out, depth, top);
    if (c == '[') return array(out, depth);
    if (c == '"') return dump_string(string(), out);
    if (c == '-' || (c >= '0' && c <= '9')) return number(out);
    for (const char* word : {"true", "false", "null"}) {
      const size_t n = std::char_traits<char>::length(word);
      if (s_.compare(i_, n, word) == 0) {
        i_ += n;
        out += word;
        return;
      }
    }
    // Python's json.loads reads NaN / Infinity, and json.dumps(allow_nan=False) then refuses them
    fail("not a JSON value (NaN and Infinity are refused, as Python's digest refuses them)", i_);
  }

  void object(std::string& out, int depth, bool top) {
    expect('{');
    std::map<Codes, std::string> members;  // sorted by code point, as sort_keys sorts str; the last equal key wins
    skip_ws();
    if (peek() == '}') {
      ++i_;
    } else {
      while (true) {
        skip_ws();
        if (peek() != '"') fail("expected a key string", i_);
        Codes key = string();
        skip_ws();
        expect(':');
        skip_ws();
        std::string v;
        value(v, depth + 1, false);
        members[key] = std::move(v);
        skip_ws();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        break;
      }
    }
    if (top) members.erase(U"checksum");
    out += '{';
    bool first = true;
    for (const auto& [key, v] : members) {
      if (!first) out += ',';
      first = false;
      dump_string(key, out);
      out += ':';
      out += v;
    }
    out += '}';
  }

  void array(std::string& out, int depth) {
    expect('[');
    out += '[';
    skip_ws();
    if (peek() == ']') {
      ++i_;
      out += ']';
      return;
    }
    while (true) {
      skip_ws();
      value(out, depth + 1, false);
      skip_ws();
      if (peek() == ',') {
        ++i_;
        out += ',';
        continue;
      }
      expect(']');
      out += ']';
      return;
    }
  }

  uint32_t hex4() {
    if (i_ + 4 > s_.size()) fail("a truncated \\u escape", i_);
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= uint32_t(h - '0');
      else if (h >= 'a' && h <= 'f') v |= uint32_t(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= uint32_t(h - 'A' + 10);
      else fail("a bad \\u escape", i_ - 1);
    }
    return v;
  }

  // One UTF-8 sequence, strictly (Python decodes the file as UTF-8 and refuses overlong forms and surrogates).
  char32_t utf8() {
    const auto b0 = static_cast<unsigned char>(s_[i_]);
    const int n = b0 >= 0xC2 && b0 <= 0xDF ? 1 : b0 >= 0xE0 && b0 <= 0xEF ? 2 : b0 >= 0xF0 && b0 <= 0xF4 ? 3 : -1;
    if (n < 0 || i_ + size_t(n) >= s_.size()) fail("invalid UTF-8", i_);
    char32_t c = b0 & (0x3F >> n);
    for (int k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s_[i_ + k]);
      if ((b & 0xC0) != 0x80) fail("invalid UTF-8", i_ + k);
      c = (c << 6) | (b & 0x3F);
    }
    const char32_t min = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) fail("invalid UTF-8", i_);
    i_ += size_t(n) + 1;
    return c;
  }

  // A JSON string as Python's json.loads decodes it: a \uD8xx\uDCxx pair joins into one code point, a lone
  // surrogate escape stays a lone surrogate, raw control characters are refused (strict=True).
  Codes string() {
    expect('"');
    Codes out;
    while (true) {
      if (i_ >= s_.size()) fail("an unterminated string", i_);
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return out;
      }
      if (c < 0x20) fail("a control character in a string", i_);
      if (c >= 0x80) {
        out += utf8();
        continue;
      }
      ++i_;
      if (c != '\\') {
        out += char32_t(c);
        continue;
      }
      if (i_ >= s_.size()) fail("an unterminated string", i_);
      const char e = s_[i_++];
      switch (e) {
        case '"': out += U'"'; break;
        case '\\': out += U'\\'; break;
        case '/': out += U'/'; break;
        case 'b': out += U'\b'; break;
        case 'f': out += U'\f'; break;
        case 'n': out += U'\n'; break;
        case 'r': out += U'\r'; break;
        case 't': out += U'\t'; break;
        case 'u': {
          uint32_t v = hex4();
          if (v >= 0xD800 && v <= 0xDBFF && s_.compare(i_, 2, "\\u") == 0) {
            const size_t back = i_;
            i_ += 2;
            uint32_t low = hex4();
            if (low >= 0xDC00 && low <= 0xDFFF) {
              v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00);
            } else {
              i_ = back;  // not a pair: the high surrogate stays alone, the next escape is read on its own
            }
          }
          out += char32_t(v);
          break;
        }
        default: fail(std::string("a bad escape \\") + e, i_ - 1);
      }
    }
  }

  // An integer literal is a Python int (exact, any size; "-0" is 0); one with '.', 'e' or 'E' a float, printed
  // with repr.
  void number(std::string& out) {
    const size_t start = i_;
    if (peek() == '-') ++i_;
    if (peek() == '0') {
      ++i_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++i_;
    } else {
      fail("a bad number", start);
    }
    bool is_float = false;
    if (peek() == '.') {
      is_float = true;
      ++i_;
      if (!(peek() >= '0' && peek() <= '9')) fail("a bad number", start);
      while (peek() >= '0' && peek() <= '9') ++i_;
    }
    if (peek() == 'e' || peek() == 'E') {
      is_float = true;
      ++i_;
      if (peek() == '+' || peek() == '-') ++i_;
      if (!(peek() >= '0' && peek() <= '9')) fail("a bad number", start);
      while (peek() >= '0' && peek() <= '9') ++i_;
    }
    const std::string literal = s_.substr(start, i_ - start);
    if (!is_float) {
      // Python refuses int literals over 4300 digits (sys.int_info.default_max_str_digits)
      if (literal.size() > 4300) fail("an integer of more than 4300 digits", start);
      out += literal == "-0" ? "0" : literal;
      return;
    }
    const double v = std::strtod(literal.c_str(), nullptr);  // correctly rounded, as Python's float()
    if (!std::isfinite(v)) fail("a number out of the range of a double (" + literal.substr(0, 40) + ")", start);
    out += python_float_repr(v);
  }

  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace

std::string python_float_repr(double x) {
  // The shortest digits that round-trip (what repr picks too), from to_chars in scientific form: d[.ddd]e±XX.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  std::string sign;
  if (!sci.empty() && sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exp10 = std::atoi(sci.c_str() + e + 1);
  const int decpt = exp10 + 1;  // digits d1 d2 ... with the point after position decpt
  const int n = int(digits.size());
  // Python's float_repr_style 'short', mode 'r': exponent form when decpt <= -4 or decpt > 16
  if (decpt <= -4 || decpt > 16) {
    std::string m = digits.substr(0, 1) + (n > 1 ? "." + digits.substr(1) : "");
    const int ax = std::abs(exp10);
    return sign + m + "e" + (exp10 < 0 ? "-" : "+") + (ax < 10 ? "0" : "") + std::to_string(ax);
  }
  if (decpt <= 0) return sign + "0." + std::string(size_t(-decpt), '0') + digits;
  if (decpt >= n) return sign + digits + std::string(size_t(decpt - n), '0') + ".0";
  return sign + digits.substr(0, size_t(decpt)) + "." + digits.substr(size_t(decpt));
}

std::string canonical_manifest_json(const std::string& text) { return Parser(text).document(); }

}  // namespace edgeexit
