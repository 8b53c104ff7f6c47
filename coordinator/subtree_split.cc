#include "coordinator/subtree_split.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace arbor::coordinator {
namespace {

// splitmix64's finalizer: chained over the tokens, the hash of a prefix
// determines the hash of each longer one, so Find walks a suffix once.
uint64_t Mix(uint64_t h) {
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

uint64_t Step(uint64_t h, int32_t token) {
  return Mix(h + 0x9e3779b97f4a7c15ULL + static_cast<uint32_t>(token));
}

constexpr uint64_t kEmpty = 0x5ab7ee5ab7ee5ab7ULL;

size_t CommonPrefix(absl::Span<const int32_t> a, absl::Span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace

std::vector<std::vector<int>> SplitSubtrees(const std::vector<absl::Span<const int32_t>>& suffixes,
                                            const std::vector<int>& weights, int parts,
                                            int64_t prompt_tokens, int block_tokens) {
  const int n = static_cast<int>(suffixes.size());
  std::vector<std::vector<int>> out;
  if (n == 0) return out;
  parts = std::clamp(parts, 1, n);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return std::lexicographical_compare(suffixes[a].begin(), suffixes[a].end(), suffixes[b].begin(),
                                        suffixes[b].end());
  });
  // lcp[c]: whole blocks shared by the branches on either side of cut c
  // (between order[c - 1] and order[c]), prompt included; below[c]: the
  // weight before cut c.
  const int64_t block = std::max(1, block_tokens);
  const int64_t prompt = std::max<int64_t>(0, prompt_tokens);
  std::vector<int64_t> lcp(n, 0);
  std::vector<double> below(n + 1, 0);
  for (int c = 0; c < n; ++c) {
    const int w = c < static_cast<int>(weights.size()) ? std::max(1, weights[order[c]]) : 1;
    below[c + 1] = below[c] + w;
    if (c > 0) {
      const int64_t shared = CommonPrefix(suffixes[order[c - 1]], suffixes[order[c]]);
      lcp[c] = (prompt + shared) / block;
    }
  }
  const double total = below[n];
  const double half_share = total / (2.0 * parts);
  std::vector<int> cuts;
  int previous = 0;
  for (int k = 1; k < parts; ++k) {
    const double ideal = total * k / parts;
    // Room for the parts still to cut: each keeps at least one branch.
    const int lo = previous + 1;
    const int hi = n - (parts - k);
    int best = -1;
    auto better = [&](int c, int than) {
      if (than < 0) return true;
      if (lcp[c] != lcp[than]) return lcp[c] < lcp[than];
      return std::abs(below[c] - ideal) < std::abs(below[than] - ideal);
    };
    for (int c = lo; c <= hi; ++c) {
      if (std::abs(below[c] - ideal) <= half_share && better(c, best)) best = c;
    }
    if (best < 0) {  // no cut within half a share: the nearest to the balance
      for (int c = lo; c <= hi; ++c) {
        if (best < 0 || std::abs(below[c] - ideal) < std::abs(below[best] - ideal)) best = c;
      }
    }
    cuts.push_back(best);
    previous = best;
  }
  cuts.push_back(n);
  int begin = 0;
  for (int end : cuts) {
    std::vector<int> part(order.begin() + begin, order.begin() + end);
    std::sort(part.begin(), part.end());
    out.push_back(std::move(part));
    begin = end;
  }
  return out;
}

std::string SubtreeMap::Find(absl::Span<const int32_t> suffix) const {
  if (entries_.empty()) return "";
  const std::string* found = nullptr;
  uint64_t h = kEmpty;
  for (int32_t token : suffix) {
    h = Step(h, token);
    auto it = entries_.find(h);
    if (it != entries_.end()) found = &it->second.address;
  }
  return found != nullptr ? *found : "";
}

void SubtreeMap::Record(absl::Span<const int32_t> suffix, const std::string& address) {
  // An empty suffix would be a prefix of every branch: it says nothing.
  if (suffix.empty()) return;
  uint64_t h = kEmpty;
  for (int32_t token : suffix) h = Step(h, token);
  Entry& entry = entries_[h];
  entry.address = address;
  entry.generation = ++generation_;
  if (entries_.size() > max_entries_) {
    // Drop the oldest quarter at once, so that trimming is rare.
    const uint64_t keep_after = generation_ - max_entries_ * 3 / 4;
    absl::erase_if(entries_, [&](const auto& e) { return e.second.generation <= keep_after; });
  }
}

void SubtreeMap::Forget(const std::string& address) {
  absl::erase_if(entries_, [&](const auto& e) { return e.second.address == address; });
}

}  // namespace arbor::coordinator
