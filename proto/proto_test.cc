// Guards the wire contract's shape: presence of optional fields, oneofs and round-trips.
#include <string>

#include "gka/serving/v1/serving.pb.h"
#include "gka/worker/v1/worker.pb.h"
#include "gtest/gtest.h"

namespace {

using gka::serving::v1::GenerateRequest;
using gka::serving::v1::GenerateResponse;
using gka::worker::v1::TransferTicket;

TEST(ProtoTest, OptionalSamplingFieldsDistinguishZeroFromAbsent) {
  GenerateRequest req;
  EXPECT_FALSE(req.sampling().has_temperature());
  req.mutable_sampling()->set_temperature(0.0f);
  std::string wire = req.SerializeAsString();
  GenerateRequest back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_TRUE(back.sampling().has_temperature());
  EXPECT_EQ(back.sampling().temperature(), 0.0f);
  EXPECT_FALSE(back.sampling().has_top_p());
  EXPECT_FALSE(back.has_prefill_num_iter());
}

TEST(ProtoTest, InputIsAOneof) {
  GenerateRequest req;
  req.set_text("hello");
  EXPECT_EQ(req.input_case(), GenerateRequest::kText);
  req.mutable_token_ids()->add_ids(7);
  EXPECT_EQ(req.input_case(), GenerateRequest::kTokenIds);
  EXPECT_TRUE(req.text().empty());
  req.mutable_chat()->add_messages()->set_role("user");
  req.mutable_chat()->set_enable_thinking(false);
  EXPECT_EQ(req.input_case(), GenerateRequest::kChat);
  EXPECT_TRUE(req.chat().has_enable_thinking());
}

TEST(ProtoTest, ResponseCarriesExactlyOneKind) {
  GenerateResponse resp;
  resp.mutable_final()->set_finish_reason(gka::serving::v1::FINISH_REASON_LENGTH);
  resp.mutable_error()->set_retryable(true);
  EXPECT_EQ(resp.kind_case(), GenerateResponse::kError);
  EXPECT_FALSE(resp.has_final());
}

TEST(ProtoTest, TicketRoundTripsBinaryFields) {
  TransferTicket t;
  t.set_transfer_id(0xfedcba9876543210ull);
  t.set_compat_hash(0x0123456789abcdefull);
  auto* rank = t.add_ranks();
  rank->set_ucx_worker_address(std::string("\0\x01\xff", 3));
  auto* region = rank->add_regions();
  region->set_remote_addr(0x7f0000001000ull);
  region->set_packed_rkey(std::string(40, '\0'));
  rank->add_page_ids(3);
  rank->add_page_ids(9);
  TransferTicket back;
  ASSERT_TRUE(back.ParseFromString(t.SerializeAsString()));
  EXPECT_EQ(back.transfer_id(), 0xfedcba9876543210ull);
  EXPECT_EQ(back.ranks(0).ucx_worker_address().size(), 3u);
  EXPECT_EQ(back.ranks(0).regions(0).packed_rkey().size(), 40u);
  EXPECT_EQ(back.ranks(0).page_ids(1), 9u);
}

}  // namespace
