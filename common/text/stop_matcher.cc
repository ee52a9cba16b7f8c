#include "common/text/stop_matcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/text/utf8.h"

namespace gka::text {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const std::string& s : stops_) max_stop_size_ = std::max(max_stop_size_, s.size());
}

absl::StatusOr<StopMatcher> StopMatcher::Create(std::vector<std::string> stop_strings) {
  for (size_t i = 0; i < stop_strings.size(); ++i) {
    if (stop_strings[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " is empty"));
    }
    if (!IsValidUtf8(stop_strings[i])) {
      return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " is not valid UTF-8"));
    }
  }
  return StopMatcher(std::move(stop_strings));
}

size_t StopMatcher::LongestPartialStop() const {
  const size_t longest = std::min(held_.size(), max_stop_size_ - 1);
  for (size_t n = longest; n > 0; --n) {
    const absl::string_view tail = absl::string_view(held_).substr(held_.size() - n);
    for (const std::string& s : stops_) {
      if (s.size() > n && absl::string_view(s).substr(0, n) == tail) return n;
    }
  }
  return 0;
}

StopMatcher::Result StopMatcher::Add(absl::string_view text) {
  Result result;
  if (stopped()) {
    result.stopped = true;
    result.stop_index = stop_index_;
    return result;
  }
  held_.append(text.data(), text.size());
  if (stops_.empty()) {
    result.text.swap(held_);
    return result;
  }
  // held_ never contains a whole stop string between calls, so a search of all of it only
  // finds matches that end in the new text.
  size_t best_begin = 0;
  size_t best_end = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t begin = held_.find(stops_[i]);
    if (begin == std::string::npos) continue;
    const size_t end = begin + stops_[i].size();
    if (end < best_end || (end == best_end && begin < best_begin)) {
      best_begin = begin;
      best_end = end;
      stop_index_ = static_cast<int>(i);
    }
  }
  if (stopped()) {
    result.text = held_.substr(0, best_begin);
    result.stopped = true;
    result.stop_index = stop_index_;
    held_.clear();
    return result;
  }
  const size_t keep = LongestPartialStop();
  result.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return result;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace gka::text
