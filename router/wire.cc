#include "router/wire.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/message.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/proto_buffer_writer.h>
#include <grpcpp/support/slice.h>

#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/check.h"
#include "common/text/utf8.h"

namespace gka::router {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::internal::WireFormatLite;

// Walks the wire format of `descriptor`, descending into sub-messages, and returns the path
// of the first string field with invalid UTF-8 ("" when none, or on malformed input).
std::string Walk(absl::string_view wire, const Descriptor* descriptor, const std::string& prefix,
                 int depth) {
  if (depth > 32) return "";  // protobuf's own recursion limit is larger; ours only reports
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(wire.data()),
                                            static_cast<int>(wire.size()));
  std::map<int, int> repeats;  // field number -> occurrences so far (repeated-field index)
  while (true) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return "";
    const int number = WireFormatLite::GetTagFieldNumber(tag);
    const FieldDescriptor* field = descriptor->FindFieldByNumber(number);
    const bool delimited =
        WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
    const bool is_string = field != nullptr && field->type() == FieldDescriptor::TYPE_STRING;
    const bool is_message = field != nullptr && field->type() == FieldDescriptor::TYPE_MESSAGE;
    if (!delimited || (!is_string && !is_message)) {
      if (!WireFormatLite::SkipField(&in, tag)) return "";
      continue;
    }
    uint32_t length = 0;
    std::string bytes;
    if (!in.ReadVarint32(&length) || !in.ReadString(&bytes, static_cast<int>(length))) return "";
    std::string path = prefix.empty() ? field->name() : absl::StrCat(prefix, ".", field->name());
    if (field->is_repeated()) absl::StrAppend(&path, "[", repeats[number]++, "]");
    if (is_string) {
      if (!text::IsValidUtf8(bytes)) {
        return absl::StrCat(path, ": invalid UTF-8 at byte ", text::FirstInvalidUtf8Offset(bytes));
      }
    } else {
      std::string inner = Walk(bytes, field->message_type(), path, depth + 1);
      if (!inner.empty()) return inner;
    }
  }
}

}  // namespace

std::string FindInvalidUtf8Field(absl::string_view wire, const google::protobuf::Message& message) {
  return Walk(wire, message.GetDescriptor(), "", 0);
}

absl::Status ParseFromWire(absl::string_view wire, google::protobuf::Message* message) {
  // The walk is cheap next to tokenizing, and runs only when the strict parse fails.
  if (message->ParseFromArray(wire.data(), static_cast<int>(wire.size()))) {
    return absl::OkStatus();
  }
  const std::string utf8 = FindInvalidUtf8Field(wire, *message);
  if (!utf8.empty()) return absl::InvalidArgumentError(utf8);
  return absl::InvalidArgumentError(absl::StrCat(
      "request: the bytes are not a valid ", message->GetDescriptor()->full_name(), " message"));
}

absl::Status ParseFromWire(const grpc::ByteBuffer& buffer, google::protobuf::Message* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) {
    return absl::InvalidArgumentError("request: unreadable message bytes");
  }
  if (slices.size() == 1) {
    return ParseFromWire(
        absl::string_view(reinterpret_cast<const char*>(slices[0].begin()), slices[0].size()),
        message);
  }
  std::string wire;
  wire.reserve(buffer.Length());
  for (const grpc::Slice& s : slices) {
    wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return ParseFromWire(wire, message);
}

grpc::ByteBuffer ToByteBuffer(const google::protobuf::Message& message) {
  grpc::ByteBuffer buffer;
  bool own_buffer = false;
  // Serializes straight into gRPC slices (no intermediate std::string).
  const grpc::Status s = grpc::SerializationTraits<google::protobuf::Message>::Serialize(
      message, &buffer, &own_buffer);
  GKA_CHECK(s.ok()) << "serializing " << message.GetDescriptor()->full_name() << ": "
                    << s.error_message();
  return buffer;
}

}  // namespace gka::router
