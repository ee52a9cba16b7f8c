#include "common/text/byte_level.h"

#include <array>

#include "common/text/utf8.h"

namespace gka::text::internal {
namespace {

// Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, DEL,
// NBSP, soft hyphen, ...) are moved to U+0100.. in byte order.
struct Tables {
  std::array<char32_t, 256> byte_to_cp;
  std::array<int16_t, 512> cp_to_byte;  // every code point used is below U+0200; -1: unused

  Tables() {
    cp_to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_cp[b] = printable ? static_cast<char32_t>(b) : next++;
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables& GetTables() {
  static const Tables* const tables = new Tables();
  return *tables;
}

}  // namespace

char32_t ByteToCodePoint(uint8_t b) { return GetTables().byte_to_cp[b]; }

std::optional<std::string> ByteLevelToBytes(absl::string_view token) {
  const Tables& t = GetTables();
  std::string out;
  out.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    if (ValidSequenceLength(token, pos) == 0) return std::nullopt;
    const char32_t cp = DecodeUtf8(token, &pos);
    if (cp >= t.cp_to_byte.size() || t.cp_to_byte[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(t.cp_to_byte[cp]));
  }
  return out;
}

std::string BytesToByteLevel(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) AppendUtf8(ByteToCodePoint(static_cast<uint8_t>(c)), &out);
  return out;
}

}  // namespace gka::text::internal
