// Raw request parsing: invalid UTF-8 anywhere is INVALID_ARGUMENT naming the field path.
#include "router/wire.h"

#include <grpcpp/support/byte_buffer.h>

#include "gka/serving/v1/serving.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gka::router {
namespace {

namespace v1 = ::gka::serving::v1;
using ::testing::HasSubstr;

// Serializes without protobuf's UTF-8 refusal in the way (it only logs when serializing).
std::string Wire(const v1::GenerateRequest& r) { return r.SerializeAsString(); }

TEST(WireTest, ParsesValidRequests) {
  v1::GenerateRequest r;
  r.set_text("héllo");
  r.mutable_sampling()->add_stop("x");
  v1::GenerateRequest parsed;
  ASSERT_TRUE(ParseFromWire(Wire(r), &parsed).ok());
  EXPECT_EQ(parsed.text(), "héllo");
  grpc::ByteBuffer buffer = ToByteBuffer(r);
  v1::GenerateRequest from_buffer;
  ASSERT_TRUE(ParseFromWire(buffer, &from_buffer).ok());
  EXPECT_EQ(from_buffer.sampling().stop(0), "x");
}

TEST(WireTest, NamesTheFieldWithInvalidUtf8) {
  v1::GenerateRequest r;
  r.set_text(std::string("ok\xC3", 3));
  v1::GenerateRequest parsed;
  absl::Status s = ParseFromWire(Wire(r), &parsed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "text: invalid UTF-8 at byte 2");

  r.set_text("fine");
  r.mutable_sampling()->add_stop("a");
  r.mutable_sampling()->add_stop(std::string("\xFF", 1));
  s = ParseFromWire(Wire(r), &parsed);
  EXPECT_EQ(s.message(), "sampling.stop[1]: invalid UTF-8 at byte 0");

  v1::GenerateRequest chat;
  chat.mutable_chat()->add_messages()->set_content("fine");
  chat.mutable_chat()->add_messages()->set_content(std::string("bad\xE2\x82", 5));
  s = ParseFromWire(Wire(chat), &parsed);
  EXPECT_EQ(s.message(), "chat.messages[1].content: invalid UTF-8 at byte 3");
}

TEST(WireTest, GarbageIsNamedAsSuch) {
  v1::GenerateRequest parsed;
  const absl::Status s = ParseFromWire(std::string("\xFF\xFF\xFF\xFF\xFF", 5), &parsed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not a valid gka.serving.v1.GenerateRequest"));
}

}  // namespace
}  // namespace gka::router
