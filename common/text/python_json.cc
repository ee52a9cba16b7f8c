#include "common/text/python_json.h"

#include <charconv>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gka::text::internal {
namespace {

// json.dumps' string escaping with ensure_ascii=False: quote, backslash and the C0 controls
// only; everything else, DEL and non-ASCII included, is written as is.
void AppendPythonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (char ch : s) {
    switch (ch) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<unsigned char>(ch));
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
}

void Append(const nlohmann::ordered_json& v, std::string* out) {
  using Type = nlohmann::ordered_json::value_t;
  switch (v.type()) {
    case Type::null:
      out->append("null");
      break;
    case Type::boolean:
      out->append(v.get<bool>() ? "true" : "false");
      break;
    case Type::number_integer:
      absl::StrAppend(out, v.get<int64_t>());
      break;
    case Type::number_unsigned:
      absl::StrAppend(out, v.get<uint64_t>());
      break;
    case Type::number_float:
      out->append(PythonFloatRepr(v.get<double>()));
      break;
    case Type::string:
      AppendPythonString(v.get_ref<const std::string&>(), out);
      break;
    case Type::array: {
      out->push_back('[');
      bool first = true;
      for (const auto& item : v) {
        if (!first) out->append(", ");
        first = false;
        Append(item, out);
      }
      out->push_back(']');
      break;
    }
    case Type::object: {
      out->push_back('{');
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out->append(", ");
        first = false;
        AppendPythonString(it.key(), out);
        out->append(": ");
        Append(it.value(), out);
      }
      out->push_back('}');
      break;
    }
    case Type::binary:
    case Type::discarded:
      out->append("null");
      break;  // never produced by parse()
  }
}

}  // namespace

std::string PythonFloatRepr(double value) {
  // Shortest round-trip digits, as Python's repr, in scientific form "d.ddde+XX".
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  std::string sci(buffer, result.ptr);
  const size_t e = sci.find('e');
  const int exponent = std::atoi(sci.c_str() + e + 1);
  std::string mantissa = sci.substr(0, e);
  std::string sign;
  if (!mantissa.empty() && mantissa[0] == '-') {
    sign = "-";
    mantissa.erase(0, 1);
  }
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  // Python (float_repr_style 'short') switches to exponent form outside 1e-4 <= |x| < 1e16.
  if (exponent < -4 || exponent >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
    absl::StrAppendFormat(&out, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out;
  }
  std::string out = sign;
  if (exponent < 0) {
    absl::StrAppend(&out, "0.", std::string(static_cast<size_t>(-exponent - 1), '0'), digits);
    return out;
  }
  const size_t integer_digits = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= integer_digits) {
    absl::StrAppend(&out, digits, std::string(integer_digits - digits.size(), '0'), ".0");
  } else {
    absl::StrAppend(&out, digits.substr(0, integer_digits), ".", digits.substr(integer_digits));
  }
  return out;
}

std::string PythonJsonDumps(const nlohmann::ordered_json& value) {
  std::string out;
  Append(value, &out);
  return out;
}

}  // namespace gka::text::internal
