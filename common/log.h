// Minimal leveled logging to stderr (Abseil 20220623 has no absl/log).
//   ARBOR_LOG(INFO) << "worker listening on " << address;
// Level is read once from ARBOR_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR; default
// INFO). Thread-safe: each message is written with one fwrite.
#ifndef ARBOR_COMMON_LOG_H_
#define ARBOR_COMMON_LOG_H_

#include <sstream>

namespace arbor {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// The minimum level that is printed.
LogLevel MinLogLevel();

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace arbor

#define ARBOR_LOG_LEVEL_DEBUG ::arbor::LogLevel::kDebug
#define ARBOR_LOG_LEVEL_INFO ::arbor::LogLevel::kInfo
#define ARBOR_LOG_LEVEL_WARNING ::arbor::LogLevel::kWarning
#define ARBOR_LOG_LEVEL_ERROR ::arbor::LogLevel::kError

#define ARBOR_LOG(level)                                          \
  if (ARBOR_LOG_LEVEL_##level < ::arbor::MinLogLevel()) {         \
  } else                                                          \
    ::arbor::LogMessage(ARBOR_LOG_LEVEL_##level, __FILE__, __LINE__).stream()

#endif  // ARBOR_COMMON_LOG_H_
