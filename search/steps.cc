#include "search/steps.h"

namespace arbor::search {

std::vector<std::string> SplitAtDelimiters(std::string_view text,
                                           const std::vector<std::string>& delimiters) {
  std::vector<std::string> pieces;
  size_t start = 0;
  while (start < text.size()) {
    // The earliest delimiter from `start` (the longest among equals).
    size_t at = std::string_view::npos, len = 0;
    for (const std::string& d : delimiters) {
      if (d.empty()) continue;
      const size_t f = text.find(d, start);
      if (f == std::string_view::npos) continue;
      if (at == std::string_view::npos || f < at || (f == at && d.size() > len)) {
        at = f;
        len = d.size();
      }
    }
    const size_t end = at == std::string_view::npos ? text.size() : at + len;
    pieces.emplace_back(text.substr(start, end - start));
    start = end;
  }
  if (pieces.empty()) pieces.emplace_back(text);
  return pieces;
}

}  // namespace arbor::search
