#include "common/text/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/text/test_util.h"

namespace gka::text {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

using Qwen3TokenizerTest = Qwen3TokenizerTestBase;

// A text for failure messages: JSON-quoted, cut to 160 bytes (the goldens hold 30 KB ones).
std::string Show(const std::string& text) {
  const std::string cut = text.size() > 160 ? text.substr(0, 160) : text;
  return Json(cut).dump(-1, ' ', false, Json::error_handler_t::replace) +
         (text.size() > 160 ? absl::StrCat("... (", text.size(), " bytes)") : "");
}

TEST_F(Qwen3TokenizerTest, SpecialTokensAndVocab) {
  EXPECT_EQ(tok().VocabSize(), 151669);
  const SpecialTokenIds& ids = tok().special_ids();
  EXPECT_EQ(ids.endoftext, 151643);
  EXPECT_EQ(ids.im_start, 151644);
  EXPECT_EQ(ids.im_end, 151645);
  EXPECT_EQ(ids.eos, 151645);  // tokenizer_config.json: eos_token <|im_end|>
  EXPECT_EQ(ids.pad, 151643);
  EXPECT_EQ(tok().TokenToId("<think>"), 151667);
  EXPECT_EQ(tok().TokenToId("</tool_call>"), 151658);
  EXPECT_EQ(tok().TokenToId("Ġworld"), 1879);
  EXPECT_EQ(tok().TokenToId("no such token at all"), std::nullopt);
  EXPECT_EQ(tok().IdToToken(1879).value(), "Ġworld");
  EXPECT_EQ(tok().IdToToken(151644).value(), "<|im_start|>");
  EXPECT_EQ(tok().TokenBytes(1879).value(), " world");
  EXPECT_TRUE(tok().IsSpecial(151645));
  EXPECT_FALSE(tok().IsSpecial(151667));  // <think> is an added token but not special
  EXPECT_FALSE(tok().IsSpecial(1879));
  EXPECT_EQ(tok().added_tokens().size(), 26u);
}

TEST_F(Qwen3TokenizerTest, EncodesAndDecodes) {
  EXPECT_THAT(tok().Encode("Hello world").value(), ElementsAre(9707, 1879));
  EXPECT_THAT(tok().Encode("").value(), ElementsAre());
  EXPECT_EQ(tok().Decode({9707, 1879}).value(), "Hello world");
  EXPECT_EQ(tok().Decode({151644, 9707, 151645}, /*skip_special_tokens=*/true).value(), "Hello");
  EXPECT_EQ(tok().Decode({}).value(), "");
}

// Every line of golden.jsonl is what HF tokenizers answered (tools/tokenizer/make_goldens.js).
TEST_F(Qwen3TokenizerTest, MatchesHuggingFaceGoldens) {
  const std::vector<Json> cases = ReadJsonLines(TestDataPath("golden.jsonl"));
  ASSERT_GE(cases.size(), 250u);
  int failures = 0;
  for (const Json& c : cases) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    auto ids = tok().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status() << " for " << Show(text);
    if (*ids != expected && ++failures <= 10) {
      auto first_diff = std::mismatch(ids->begin(), ids->end(), expected.begin(), expected.end());
      ADD_FAILURE() << "encode " << Show(text) << "\n  first differing id at index "
                    << (first_diff.first - ids->begin()) << " of " << ids->size() << " (expected "
                    << expected.size() << ")";
    }
    EXPECT_EQ(tok().Decode(expected).value(), c["decoded"].get<std::string>()) << Show(text);
    EXPECT_EQ(tok().Decode(expected, true).value(), c["decoded_skip_special"].get<std::string>());
    // decode(encode(s)) == s wherever NFC leaves s unchanged (HF's decode says so).
    if (c["decoded"] == c["text"]) EXPECT_EQ(tok().Decode(*ids).value(), text);
  }
  EXPECT_EQ(failures, 0);
}

// lstrip / rstrip / single_word / normalized added tokens: Qwen3 itself uses none of them, so
// the goldens add tokens that do to the real tokenizer.json.
TEST(AddedTokenFlagsTest, MatchesHuggingFaceGoldens) {
  ASSERT_TRUE(Qwen3TokenizerInstalled());
  const Json golden = ReadJsonFile(TestDataPath("added_flags_golden.json"));
  std::string text = ReadFileOrDie(absl::StrCat(Qwen3TokenizerDir(), "/tokenizer.json"));
  Json root = Json::parse(text);
  for (const Json& t : golden["added_tokens"]) root["added_tokens"].push_back(t);
  auto tok = Tokenizer::FromJson(root.dump());
  ASSERT_TRUE(tok.ok()) << tok.status();
  ASSERT_GE(golden["cases"].size(), 30u);
  for (const Json& c : golden["cases"]) {
    const std::string s = c["text"].get<std::string>();
    auto ids = (*tok)->Encode(s);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c["ids"].get<std::vector<int32_t>>()) << Show(s);
    EXPECT_EQ((*tok)->Decode(*ids).value(), c["decoded"].get<std::string>()) << Show(s);
    EXPECT_EQ((*tok)->Decode(*ids, true).value(), c["decoded_skip_special"].get<std::string>());
  }
}

TEST_F(Qwen3TokenizerTest, InvalidUtf8IsInvalidArgument) {
  for (const std::string bad : {std::string("\xff"), std::string("abc\xc3"),
                                std::string("\xc0\xaf"),             // overlong '/'
                                std::string("\xed\xa0\x80"),         // UTF-16 surrogate
                                std::string("ok \xe4\xb8"),          // cut character
                                std::string("\xf4\x90\x80\x80")}) {  // above U+10FFFF
    auto ids = tok().Encode(bad);
    ASSERT_FALSE(ids.ok()) << Show(bad);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(ids.status().message(), HasSubstr("not valid UTF-8"));
  }
  EXPECT_THAT(tok().Encode(std::string("a\0b", 3)).value(), ElementsAre(64, 188, 65));
}

TEST_F(Qwen3TokenizerTest, OutOfRangeIdIsInvalidArgument) {
  for (int32_t id : {-1, tok().VocabSize(), 1 << 30}) {
    auto text = tok().Decode({9707, id});
    ASSERT_FALSE(text.ok()) << id;
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(text.status().message(), HasSubstr(absl::StrCat("token id ", id)));
    EXPECT_EQ(tok().TokenBytes(id).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(tok().IdToToken(id).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_FALSE(tok().IsSpecial(id));
  }
}

TEST_F(Qwen3TokenizerTest, DecodeRepairsCutCharactersLikeHuggingFace) {
  // "中" is one token; its bytes split across byte tokens decode only when complete.
  const std::vector<int32_t> zhong = tok().Encode("中").value();
  ASSERT_EQ(zhong.size(), 1u);
  const std::vector<int32_t> bytes = {tok().TokenToId("ä").value(), tok().TokenToId("¸").value(),
                                      tok().TokenToId("Ń").value()};
  EXPECT_EQ(tok().Decode(bytes).value(), "中");
  EXPECT_EQ(tok().Decode({bytes[0], bytes[1]}).value(), "\xEF\xBF\xBD");  // one U+FFFD
  EXPECT_EQ(tok().Decode({bytes[1], 9707}).value(), "\xEF\xBF\xBDHello");
}

TEST_F(Qwen3TokenizerTest, EncodesHundredKilobytesWellUnderASecond) {
  std::string text;
  for (const Json& c : ReadJsonLines(TestDataPath("golden.jsonl"))) {
    if (text.size() > 100000) break;
    absl::StrAppend(&text, c["text"].get<std::string>(), "\n");
  }
  // Fresh words, so the BPE cache of earlier tests does not do the work.
  for (int i = 0; text.size() < 140000; ++i) absl::StrAppend(&text, " w", i * 7919, "x", i);
  const auto start = std::chrono::steady_clock::now();
  auto ids = tok().Encode(text);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_GT(ids->size(), 20000u);
  EXPECT_LT(seconds, 1.0) << "encoding " << text.size() << " bytes took " << seconds << " s";
  EXPECT_EQ(tok().Decode(*ids).value(), tok().Decode(tok().Encode(text).value()).value());
}

// Inputs that make a backtracking regex or a quadratic merge loop slow: one huge word, long
// whitespace runs before a letter, thousands of emoji, digits, newlines.
TEST_F(Qwen3TokenizerTest, PathologicalInputsStayFast) {
  const std::vector<std::string> inputs = {
      std::string(200000, 'a'),
      std::string(200000, ' ') + "x",
      std::string(200000, '\n') + " y",
      std::string(100000, '\t') + std::string(100000, ' '),
      std::string(200000, '7'),
      [] {
        std::string s;
        for (int i = 0; i < 40000; ++i) s += "\xF0\x9F\x98\x80";  // U+1F600
        return s;
      }(),
      [] {
        std::string s;
        for (int i = 0; i < 50000; ++i) s += " \n\t";
        return s + "z";
      }(),
  };
  for (const std::string& text : inputs) {
    const auto start = std::chrono::steady_clock::now();
    auto ids = tok().Encode(text);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_LT(seconds, 1.0) << Show(text);
    EXPECT_EQ(tok().Decode(*ids).value(), text);
  }
}

TEST_F(Qwen3TokenizerTest, ConcurrentEncodesAgree) {
  const std::vector<Json> cases = ReadJsonLines(TestDataPath("golden.jsonl"));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < cases.size() * 2; i += 3) {
        const Json& c = cases[i % cases.size()];
        auto ids = tok().Encode(c["text"].get<std::string>());
        if (!ids.ok() || *ids != c["ids"].get<std::vector<int32_t>>()) ++mismatches;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// --- Loading errors -------------------------------------------------------------------------

TEST(TokenizerLoadTest, MissingFileIsNotFound) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/no_such_dir/tokenizer.json");
  auto tok = Tokenizer::FromFile(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
}

TEST(TokenizerLoadTest, DirectoryWithoutTokenizerJsonIsNotFound) {
  auto tok = Tokenizer::FromFile(::testing::TempDir());
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr("tokenizer.json"));
}

TEST(TokenizerLoadTest, InvalidJsonIsInvalidArgument) {
  const std::string path = WriteTempFile("bad_tokenizer.json", "{\"model\": {\"vocab\": ");
  auto tok = Tokenizer::FromFile(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr("not valid JSON"));
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
}

// A minimal valid byte-level tokenizer.json: 256 byte tokens, one merge, one added token.
Json TinyTokenizerJson() {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteLevelSpelling(static_cast<uint8_t>(b))] = b;
  vocab["ab"] = 256;
  return Json{
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"added_tokens",
       Json::array(
           {{{"id", 257}, {"content", "<eos>"}, {"special", true}, {"normalized", false}}})},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array({"a b"})}}},
  };
}

TEST(TokenizerLoadTest, TinyTokenizerWorks) {
  auto tok = Tokenizer::FromJson(TinyTokenizerJson().dump());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_THAT((*tok)->Encode("abc<eos>").value(), ElementsAre(256, 'c', 257));
  EXPECT_EQ((*tok)->VocabSize(), 258);
  EXPECT_EQ((*tok)->Decode({256, 257}, true).value(), "ab");
  EXPECT_EQ((*tok)->special_ids().im_end, std::nullopt);
}

TEST(TokenizerLoadTest, FilePathAlsoReadsTheConfigBesideIt) {
  ASSERT_TRUE(Qwen3TokenizerInstalled());
  auto tok = Tokenizer::FromFile(absl::StrCat(Qwen3TokenizerDir(), "/tokenizer.json"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->special_ids().eos, 151645);
}

TEST(TokenizerLoadTest, BadConfigBesideTokenizerIsInvalidArgument) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/bad_config");
  ASSERT_EQ(system(absl::StrCat("mkdir -p ", dir).c_str()), 0);
  WriteTempFile("bad_config/tokenizer.json", TinyTokenizerJson().dump());
  WriteTempFile("bad_config/tokenizer_config.json", "{\"eos_token\": ");
  auto tok = Tokenizer::FromFile(dir);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr(absl::StrCat(dir, "/tokenizer_config.json")));
  WriteTempFile("bad_config/tokenizer_config.json", "{\"eos_token\": {\"content\": \"<eos>\"}}");
  tok = Tokenizer::FromFile(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->special_ids().eos, 257);  // the older {"content": ...} form
}

TEST(TokenizerLoadTest, MissingMergesIsInvalidArgument) {
  Json json = TinyTokenizerJson();
  json["model"].erase("merges");
  const std::string path = WriteTempFile("no_merges.json", json.dump());
  auto tok = Tokenizer::FromFile(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr("model.merges is missing"));
  EXPECT_THAT(tok.status().message(), HasSubstr(path));
}

TEST(TokenizerLoadTest, MalformedPiecesAreInvalidArgument) {
  struct Case {
    const char* what;
    std::function<void(Json&)> edit;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"merge of unknown tokens", [](Json& j) { j["model"]["merges"].push_back("x yz"); },
       "missing from model.vocab"},
      {"merge without space", [](Json& j) { j["model"]["merges"].push_back("xy"); },
       "two tokens and one space"},
      {"vocab id not a number", [](Json& j) { j["model"]["vocab"]["a"] = "one"; },
       "must be a token id"},
      {"WordPiece model", [](Json& j) { j["model"]["type"] = "WordPiece"; }, "model.type"},
      {"no byte-level step",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "pre-tokenizer \"Whitespace\" is not supported"},
      {"bad regex",
       [](Json& j) {
         j["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}},
               {{"type", "ByteLevel"}, {"add_prefix_space", false}}}}};
       },
       "does not compile"},
      {"missing byte token", [](Json& j) { j["model"]["vocab"].erase("Ā"); }, "byte 0x00"},
      {"added token without id", [](Json& j) { j["added_tokens"][0].erase("id"); },
       "added_tokens[0].id"},
      {"lowercase normalizer",
       [](Json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       "normalizer \"Lowercase\""},
      {"model not an object", [](Json& j) { j["model"] = 3; }, "\"model\" must be an object"},
      {"not an object", [](Json& j) { j = Json::array(); }, "must hold a JSON object"},
  };
  for (const Case& c : cases) {
    Json json = TinyTokenizerJson();
    c.edit(json);
    auto tok = Tokenizer::FromJson(json.dump());
    ASSERT_FALSE(tok.ok()) << c.what;
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(tok.status().message(), HasSubstr(c.message)) << c.what;
  }
}

}  // namespace
}  // namespace gka::text
