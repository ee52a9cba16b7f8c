// Internal to gka::text: JSON text exactly as Python's json.dumps(x, ensure_ascii=False)
// writes it, which is what the `tojson` filter of Hugging Face chat templates produces
// (transformers overrides Jinja's own filter: no key sorting, no HTML escaping).
//
// Differences from nlohmann's dump() that this exists for: ", " and ": " separators, floats
// in Python's repr (1e-07, 1e+16, 1000000000000000.0, -0.0), key order kept.
//
//   std::string text = PythonJsonDumps(nlohmann::ordered_json::parse(tool_json));
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace gka::text::internal {

// `value` must hold valid UTF-8 strings (nlohmann's parser guarantees it).
std::string PythonJsonDumps(const nlohmann::ordered_json& value);

// Python's repr() of a finite double ("0.1", "1e-07", "2.5e+300", "3.0").
std::string PythonFloatRepr(double value);

}  // namespace gka::text::internal
