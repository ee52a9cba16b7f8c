#include "common/model/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "common/model/test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::model {
namespace {

using tensor::Buffer;
using tensor::DType;
using tensor::Shape;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// A buffer whose bytes are 0, 1, 2, ... so any misplaced byte shows.
Buffer Pattern(Shape shape, DType dtype, uint8_t start = 0) {
  Buffer b = Buffer::Allocate(shape, dtype);
  std::iota(b.data<uint8_t>(), b.data<uint8_t>() + b.nbytes(), start);
  return b;
}

// A file whose header is `header` verbatim, followed by `data_bytes` zero bytes.
std::string RawFile(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

absl::Status OpenRaw(const testing::TempDir& dir, const std::string& bytes) {
  const std::string path = dir.Join("raw.safetensors");
  testing::WriteBytes(path, bytes);
  return SafetensorsFile::Open(path).status();
}

TEST(SafetensorsTest, RoundTripKeepsBytesShapesAndAlignment) {
  testing::TempDir dir;
  Buffer f32 = Pattern({3, 5}, DType::kF32);
  Buffer bf16 = Pattern({7}, DType::kBF16, 3);  // odd byte count before the next tensor
  Buffer i64 = Pattern({2, 1, 2}, DType::kI64, 9);
  Buffer f16 = Pattern({1}, DType::kF16, 5);
  Buffer u8 = Pattern({3}, DType::kU8, 100);
  Buffer i32 = Pattern({}, DType::kI32, 50);  // a scalar
  Buffer empty = Buffer::Allocate({0, 4}, DType::kF32);
  const std::vector<NamedTensor> tensors = {
      {"u8", u8.view()},   {"bf16", bf16.view()}, {"f32", f32.view()},    {"i64", i64.view()},
      {"f16", f16.view()}, {"i32", i32.view()},   {"empty", empty.view()}};
  const std::string path = dir.Join("rt.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}, {"note", "x"}}).ok());

  const std::string bytes = testing::ReadBytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(bytes[8 + header_len - 1] == ' ' || bytes[8 + header_len - 1] == '}', true);

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->names(), ElementsAre("bf16", "empty", "f16", "f32", "i32", "i64", "u8"));
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->metadata().at("note"), "x");
  for (const NamedTensor& want : tensors) {
    absl::StatusOr<TensorInfo> got = (*file)->Get(want.name);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->dtype, want.view.dtype) << want.name;
    EXPECT_EQ(got->shape, want.view.shape) << want.name;
    EXPECT_EQ(got->file, path);
    ASSERT_EQ(got->nbytes, want.view.nbytes()) << want.name;
    EXPECT_EQ(std::memcmp(got->data, want.view.ptr, got->nbytes), 0) << want.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(got->data) % tensor::DTypeSize(got->dtype), 0u)
        << want.name << " is misaligned";
    EXPECT_EQ(got->view().ptr, got->data);
  }
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
  testing::TempDir dir;
  Buffer b = Pattern({2}, DType::kF32);
  const std::string path = dir.Join("bad.safetensors");
  absl::Status s = WriteSafetensors(path, {{"a", b.view()}, {"a", b.view()}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'a' given twice"));
  s = WriteSafetensors(path, {{"", b.view()}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  tensor::TensorView dev = b.view();
  dev.device = tensor::Device::kCuda;
  s = WriteSafetensors(path, {{"d", dev}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("device memory"));
  EXPECT_FALSE(std::filesystem::exists(path));
  s = WriteSafetensors(dir.Join("no/such/dir/x.safetensors"), {{"a", b.view()}});
  EXPECT_FALSE(s.ok());
}

TEST(SafetensorsTest, MissingTensorAndFileAreNotFound) {
  testing::TempDir dir;
  Buffer b = Pattern({2}, DType::kF32);
  const std::string path = dir.Join("m.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", b.view()}}).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<TensorInfo> t = (*file)->Get("model.norm.weight");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), HasSubstr("'model.norm.weight'"));
  EXPECT_THAT(t.status().message(), HasSubstr(path));
  EXPECT_FALSE((*file)->Contains("b"));

  EXPECT_EQ(SafetensorsFile::Open(dir.Join("none.safetensors")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(SafetensorsFile::Open(dir.path()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SafetensorsTest, EveryTruncationIsAStatusNamingTheFile) {
  testing::TempDir dir;
  Buffer a = Pattern({4, 4}, DType::kF32);
  Buffer b = Pattern({8}, DType::kBF16);
  const std::string path = dir.Join("full.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", a.view()}, {"b", b.view()}}).ok());
  const std::string full = testing::ReadBytes(path);
  const std::string cut_path = dir.Join("cut.safetensors");
  for (size_t len = 0; len < full.size(); ++len) {
    testing::WriteBytes(cut_path, full.substr(0, len));
    absl::Status s = SafetensorsFile::Open(cut_path).status();
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << "length " << len << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(cut_path));
  }
  // Cut inside the data: the message names the tensor that no longer fits.
  testing::WriteBytes(cut_path, full.substr(0, full.size() - 1));
  EXPECT_THAT(SafetensorsFile::Open(cut_path).status().message(), HasSubstr("tensor 'b'"));
}

TEST(SafetensorsTest, CorruptHeadersAreInvalidArgument) {
  testing::TempDir dir;
  struct Case {
    std::string what;
    std::string bytes;
    std::string expect;  // in the message
  };
  const std::string ok_entry = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  const std::vector<Case> cases = {
      {"bad json", RawFile("{\"a\": {", 8), "not valid JSON"},
      {"not utf8", RawFile("{\"\xff\": 1}", 8), "not valid JSON"},
      {"header past eof", std::string("\xff\x00\x00\x00\x00\x00\x00\x00", 8) + "{}",
       "runs past the end"},
      {"huge header length", std::string(8, '\xff') + "{}", "runs past the end"},
      {"header not object", RawFile("[1,2]", 0), "expected a JSON object"},
      {"entry not object", RawFile(R"({"a": 3})", 8), "tensor 'a'"},
      {"missing dtype", RawFile(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), "'dtype'"},
      {"unsupported dtype", RawFile(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
       "unsupported dtype 'F64'"},
      {"offsets past data", RawFile("{\"a\":{" + ok_entry + "}}", 4), "outside the data region"},
      {"offsets reversed", RawFile(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[8,0]}})", 8),
       "outside the data region"},
      {"offsets one value", RawFile(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 8),
       "data_offsets"},
      {"shape mismatch", RawFile(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "does not match data_offsets"},
      {"negative dim", RawFile(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       "negative"},
      {"string dim", RawFile(R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8),
       "shape"},
      {"overflowing dims",
       RawFile(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904,4],)"
               R"("data_offsets":[0,0]}})",
               8),
       "does not match"},
      {"rank 7", RawFile(R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1],"data_offsets":[0,1]}})", 8),
       "rank 7"},
      {"overlap",
       RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12),
       "overlap"},
  };
  for (const Case& c : cases) {
    absl::Status s = OpenRaw(dir, c.bytes);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.what << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(c.expect)) << c.what;
    EXPECT_THAT(s.message(), HasSubstr("raw.safetensors")) << c.what;
  }
}

TEST(SafetensorsTest, ToleratesForeignButValidHeaders) {
  testing::TempDir dir;
  // Unpadded header, non-string metadata, an empty tensor sharing an offset: all legal.
  const std::string header =
      R"({"__metadata__":{"format":"pt","n":3},"a":{"dtype":"U8","shape":[3],)"
      R"("data_offsets":[0,3]},"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})";
  const std::string path = dir.Join("foreign.safetensors");
  testing::WriteBytes(path, RawFile(header, 3));
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT((*f)->names(), ElementsAre("a", "z"));
  EXPECT_EQ((*f)->metadata().size(), 1u);
  EXPECT_EQ((*f)->Get("z")->nbytes, 0u);
}

// Writes tensors {name: 2-element F32 whose first value is `tag`} into `path`.
void WriteTagged(const std::string& path, const std::vector<std::pair<std::string, float>>& ts) {
  std::vector<Buffer> bufs;
  std::vector<NamedTensor> named;
  for (const auto& [name, tag] : ts) {
    Buffer b = Buffer::Allocate({2}, DType::kF32);
    b.data<float>()[0] = tag;
    named.push_back({name, b.view()});
    bufs.push_back(std::move(b));
  }
  ASSERT_TRUE(WriteSafetensors(path, named).ok());
}

float FirstValue(const TensorInfo& t) {
  float v;
  std::memcpy(&v, t.data, 4);
  return v;
}

TEST(CheckpointTest, SingleFileDirectoryAndPath) {
  testing::TempDir dir;
  WriteTagged(dir.Join("model.safetensors"), {{"x", 1.f}, {"y", 2.f}});
  WriteTagged(dir.Join("other.safetensors"), {{"x", 9.f}});  // ignored: model.safetensors wins
  for (const std::string& path : {dir.path(), dir.Join("model.safetensors")}) {
    absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(path);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_THAT((*c)->names(), ElementsAre("x", "y"));
    absl::StatusOr<TensorInfo> x = (*c)->Get("x");
    ASSERT_TRUE(x.ok()) << x.status();
    EXPECT_EQ(FirstValue(*x), 1.f);
    EXPECT_EQ(x->file, dir.Join("model.safetensors"));
    absl::StatusOr<TensorInfo> missing = (*c)->Get("lm_head.weight");
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
    EXPECT_THAT(missing.status().message(), HasSubstr("'lm_head.weight'"));
    EXPECT_THAT(missing.status().message(), HasSubstr(path));
  }
}

TEST(CheckpointTest, ShardedIndexOpensEachShardOnce) {
  testing::TempDir dir;
  WriteTagged(dir.Join("model-00001-of-00002.safetensors"), {{"a", 1.f}, {"b", 2.f}});
  WriteTagged(dir.Join("model-00002-of-00002.safetensors"), {{"c", 3.f}, {"stray", 4.f}});
  const Json index = {{"metadata", {{"total_size", 24}}},
                      {"weight_map",
                       {{"a", "model-00001-of-00002.safetensors"},
                        {"b", "model-00001-of-00002.safetensors"},
                        {"c", "model-00002-of-00002.safetensors"}}}};
  testing::WriteBytes(dir.Join("model.safetensors.index.json"), index.dump());
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->files().size(), 2u);
  EXPECT_THAT((*c)->names(), ElementsAre("a", "b", "c"));  // the index decides
  absl::StatusOr<TensorInfo> t = (*c)->Get("c");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(FirstValue(*t), 3.f);
  EXPECT_EQ(t->file, dir.Join("model-00002-of-00002.safetensors"));
  EXPECT_EQ(FirstValue(*(*c)->Get("b")), 2.f);
}

TEST(CheckpointTest, BadIndexesNameTheProblem) {
  testing::TempDir dir;
  WriteTagged(dir.Join("s1.safetensors"), {{"a", 1.f}});
  const std::string index_path = dir.Join("model.safetensors.index.json");
  struct Case {
    Json index;
    absl::StatusCode code;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{{"weight_map", {{"a", "s2.safetensors"}}}},
       absl::StatusCode::kNotFound,
       "shard 's2.safetensors'"},
      {{{"weight_map", {{"b", "s1.safetensors"}}}},
       absl::StatusCode::kInvalidArgument,
       "maps tensor 'b'"},
      {{{"weight_map", {{"a", "../s1.safetensors"}}}},
       absl::StatusCode::kInvalidArgument,
       "inside the checkpoint directory"},
      {{{"weight_map", {{"a", 3}}}}, absl::StatusCode::kInvalidArgument, "weight_map['a']"},
      {{{"metadata", Json::object()}}, absl::StatusCode::kInvalidArgument, "'weight_map'"},
  };
  for (const Case& c : cases) {
    testing::WriteBytes(index_path, c.index.dump());
    absl::Status s = Checkpoint::Open(dir.path()).status();
    EXPECT_EQ(s.code(), c.code) << c.index.dump() << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(c.expect)) << c.index.dump();
  }
  testing::WriteBytes(index_path, "{not json");
  absl::Status s = Checkpoint::Open(dir.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("model.safetensors.index.json"));
}

TEST(CheckpointTest, FallsBackToEverySafetensorsFile) {
  testing::TempDir dir;
  WriteTagged(dir.Join("part-a.safetensors"), {{"a", 1.f}});
  WriteTagged(dir.Join("part-b.safetensors"), {{"b", 2.f}});
  testing::WriteBytes(dir.Join("notes.txt"), "not a tensor file");
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir.path());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT((*c)->names(), ElementsAre("a", "b"));
  EXPECT_EQ((*c)->Get("b")->file, dir.Join("part-b.safetensors"));

  WriteTagged(dir.Join("part-c.safetensors"), {{"a", 5.f}});
  absl::Status dup = Checkpoint::Open(dir.path()).status();
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.message(), HasSubstr("'a' is present in both"));
}

TEST(CheckpointTest, EmptyOrMissingDirectoryIsNotFound) {
  testing::TempDir dir;
  EXPECT_EQ(Checkpoint::Open(dir.path()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Checkpoint::Open(dir.Join("nope")).status().code(), absl::StatusCode::kNotFound);
}

TEST(CheckpointTest, CorruptShardNamesFile) {
  testing::TempDir dir;
  testing::WriteBytes(dir.Join("model.safetensors"), RawFile("{\"a\":", 0));
  absl::Status s = Checkpoint::Open(dir.path()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr(dir.Join("model.safetensors")));
}

}  // namespace
}  // namespace gka::model
