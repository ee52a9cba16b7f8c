// Test-only helpers of gka::text's tests: where the test data lives and how to read it.
//
// The real Qwen3 tokenizer is installed by `make deps` under third_party/npm (git-ignored);
// its directory comes from the build (GKA_QWEN3_TOKENIZER_DIR), so tests run from anywhere.
//
//   std::unique_ptr<Tokenizer> tok = LoadQwen3Tokenizer();  // nullptr + failure if missing
//   for (const nlohmann::json& c : ReadJsonLines(TestDataPath("golden.jsonl"))) ...
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/text/tokenizer.h"

namespace gka::text {

// tests/data/tokenizer/<name> in the source tree.
std::string TestDataPath(absl::string_view name);

// Directory holding the real Qwen3 tokenizer.json and tokenizer_config.json.
std::string Qwen3TokenizerDir();

// Success when the real Qwen3 tokenizer files are installed; otherwise a failure that says
// to run `make deps`. ASSERT_TRUE(Qwen3TokenizerInstalled()) before reading them.
::testing::AssertionResult Qwen3TokenizerInstalled();

// The real Qwen3 tokenizer; on failure records a test failure (saying to run `make deps` when
// the files are missing) and returns nullptr.
std::unique_ptr<Tokenizer> LoadQwen3Tokenizer();

// Fixture base for suites that share one loaded Qwen3 tokenizer (loading takes a moment).
// Tests fail with the `make deps` hint when it is not installed.
class Qwen3TokenizerTestBase : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void SetUp() override;
  static const Tokenizer& tok() { return *tokenizer_; }

 private:
  static Tokenizer* tokenizer_;
};

// File contents; a test failure (and "") when unreadable.
std::string ReadFileOrDie(const std::string& path);
nlohmann::json ReadJsonFile(const std::string& path);
std::vector<nlohmann::json> ReadJsonLines(const std::string& path);

// Writes `contents` to a fresh file under the test's temporary directory; returns its path.
std::string WriteTempFile(absl::string_view name, absl::string_view contents);

// GPT-2's byte-level spelling of one byte ("Ġ" for ' ').
std::string ByteLevelSpelling(uint8_t byte);

}  // namespace gka::text
