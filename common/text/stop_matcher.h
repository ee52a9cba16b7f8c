// Stop strings on streamed text, with OpenAI semantics: generation ends at the first stop
// string, and neither it nor anything after it is returned.
//
// Owns the tail of the stream that could still be the start of a stop string: text is held
// back until it is certain not to be part of one, so a stop string split across tokens is
// still caught and never half-sent. Feed it the detokenizer's output.
// Must not depend on anything but common/base.
//
//   GKA_ASSIGN_OR_RETURN(gka::text::StopMatcher stops,
//                        gka::text::StopMatcher::Create({"\n\nUser:", "###"}));
//   StopMatcher::Result r = stops.Add(piece);
//   Send(r.text);
//   if (r.stopped) FinishWith("stop");            // r.stop_index says which string
//   ... at end of stream without a stop: Send(stops.Flush());
//
// "First" means the stop string that is complete earliest in the stream (the smallest end
// offset; among those, the longest), so the result does not depend on how the text was cut
// into pieces. Thread-safety: one object per stream; not safe for concurrent use.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gka::text {

class StopMatcher {
 public:
  struct Result {
    std::string text;      // safe to send now
    bool stopped = false;  // a stop string completed; `text` ends just before it
    int stop_index = -1;   // index into the stop strings given to Create, when stopped
  };

  // InvalidArgument for an empty stop string or one that is not valid UTF-8. No stop strings
  // is fine: everything passes through at once.
  static absl::StatusOr<StopMatcher> Create(std::vector<std::string> stop_strings);

  // Appends `text` to the stream. After a stop, further text is discarded (Result.stopped
  // stays true, Result.text empty).
  Result Add(absl::string_view text);

  // End of the stream without a stop: the held-back text (empty after a stop).
  std::string Flush();

  bool stopped() const { return stop_index_ >= 0; }
  size_t held_bytes() const { return held_.size(); }
  const std::vector<std::string>& stop_strings() const { return stops_; }

 private:
  explicit StopMatcher(std::vector<std::string> stops);
  // Length of the longest suffix of held_ that is a proper prefix of a stop string.
  size_t LongestPartialStop() const;

  std::vector<std::string> stops_;
  size_t max_stop_size_ = 0;
  std::string held_;
  int stop_index_ = -1;
};

}  // namespace gka::text
