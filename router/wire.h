// Parsing public requests from their wire bytes, so that bad bytes are INVALID_ARGUMENT
// naming the field instead of gRPC's generic INTERNAL.
//
// Why: protobuf (proto3) refuses a `string` field holding invalid UTF-8 at parse time, and a
// typed gRPC handler then never runs — the client gets INTERNAL "failed to deserialize". The
// router takes Generate and Tokenize as raw bytes and parses them here: invalid UTF-8 becomes
// "text: invalid UTF-8 at byte 2" (any string field, at any depth, by its path), malformed
// bytes become "request: not a valid gka.serving.v1.GenerateRequest".
// Must not depend on the router's other pieces; protobuf and grpc::ByteBuffer only.
//
//   absl::Status s = ParseFromWire(*byte_buffer, &request);   // INVALID_ARGUMENT naming a field
//   grpc::ByteBuffer out = ToByteBuffer(response);
//
// Thread-safety: free functions; safe from any thread.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace grpc {
class ByteBuffer;
}  // namespace grpc

namespace gka::router {

// The path of the first string field holding invalid UTF-8 ("chat.messages[1].content"),
// with the byte offset; empty when every string is valid or the bytes are not `message`'s
// wire format (the caller's parse reports that).
std::string FindInvalidUtf8Field(absl::string_view wire, const google::protobuf::Message& message);

// Parses `wire` into `message`. INVALID_ARGUMENT naming the field for invalid UTF-8, or
// saying the bytes are not this message type.
absl::Status ParseFromWire(absl::string_view wire, google::protobuf::Message* message);
absl::Status ParseFromWire(const grpc::ByteBuffer& buffer, google::protobuf::Message* message);

grpc::ByteBuffer ToByteBuffer(const google::protobuf::Message& message);

}  // namespace gka::router
