// Minimal leveled logging to stderr (stdout belongs to tools' machine-readable output).
//
//   GKA_LOG(INFO) << "listening on " << addr;
//
// Level from env GKA_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR; default INFO). Thread-safe:
// each message is written with one call.
#pragma once

#include <sstream>

#include "absl/strings/string_view.h"

namespace gka::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

LogLevel MinLogLevel();
void SetMinLogLevel(LogLevel level);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace gka::base

#define GKA_LOG_LEVEL_DEBUG ::gka::base::LogLevel::kDebug
#define GKA_LOG_LEVEL_INFO ::gka::base::LogLevel::kInfo
#define GKA_LOG_LEVEL_WARNING ::gka::base::LogLevel::kWarning
#define GKA_LOG_LEVEL_ERROR ::gka::base::LogLevel::kError

#define GKA_LOG(level)                                      \
  if (GKA_LOG_LEVEL_##level < ::gka::base::MinLogLevel()) { \
  } else                                                    \
    ::gka::base::LogMessage(GKA_LOG_LEVEL_##level, __FILE__, __LINE__).stream()
