#include "common/text/bpe.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "common/text/byte_level.h"

namespace gka::text::internal {
namespace {

// Words longer than this are merged every time (as in HF's BPE cache): they are rare and
// would crowd out the common ones.
constexpr size_t kMaxCachedWordBytes = 256;
// Bound on cached words; the cache starts over when full, which keeps memory flat on
// adversarial input at the cost of re-merging common words once.
constexpr size_t kMaxCachedWords = 100000;

struct Symbol {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  bool live;
};

struct Candidate {
  int32_t rank;
  int32_t pos;  // index of the left symbol
  int32_t id;   // the merged token
  // std::priority_queue pops the largest: invert so the lowest rank, then the leftmost, wins.
  bool operator<(const Candidate& other) const {
    return rank != other.rank ? rank > other.rank : pos > other.pos;
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(
    absl::flat_hash_map<std::string, int32_t> vocab,
    const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges) {
  std::unique_ptr<BpeModel> model(new BpeModel());
  model->ignore_merges_ = ignore_merges;
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(std::string(1, static_cast<char>(b)));
    if (it == vocab.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.vocab has no token for byte 0x", absl::Hex(b, absl::kZeroPad2),
                       " (\"", BytesToByteLevel(std::string(1, static_cast<char>(b))),
                       "\"); only byte-level BPE vocabularies are supported"));
    }
    model->byte_ids_[b] = it->second;
  }
  model->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto l = vocab.find(left);
    auto r = vocab.find(right);
    auto merged = vocab.find(absl::StrCat(left, right));
    if (l == vocab.end() || r == vocab.end() || merged == vocab.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model.merges[", rank, "] (\"", BytesToByteLevel(left), " ", BytesToByteLevel(right),
          "\") uses or produces a token missing from model.vocab"));
    }
    // A repeated pair takes its last rank: HF collects the merges into a HashMap, where the
    // later insert wins.
    model->merges_.insert_or_assign(PairKey(l->second, r->second),
                                    MergeResult{static_cast<int32_t>(rank), merged->second});
  }
  model->vocab_ = std::move(vocab);
  return model;
}

void BpeModel::EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.size() == 1) {
    ids->push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (ignore_merges_) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = ids->size();
  MergeAll(word, ids);
  if (cacheable) {
    std::vector<int32_t> result(ids->begin() + static_cast<std::ptrdiff_t>(first), ids->end());
    absl::WriterMutexLock lock(&cache_mu_);
    if (cache_.size() >= kMaxCachedWords) cache_.clear();
    cache_.try_emplace(std::string(word), std::move(result));
  }
}

void BpeModel::MergeAll(absl::string_view word, std::vector<int32_t>* ids) const {
  const int32_t n = static_cast<int32_t>(word.size());
  std::vector<Symbol> symbols(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {byte_ids_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  auto find_merge = [this](int32_t left, int32_t right) -> const MergeResult* {
    auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<Candidate> queue;
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const MergeResult* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push({m->rank, i, m->id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.live || left.next < 0) continue;
    const int32_t right_pos = left.next;
    Symbol& right = symbols[right_pos];
    // A stale entry: one of its symbols merged since it was queued.
    const MergeResult* current = find_merge(left.id, right.id);
    if (current == nullptr || current->id != top.id) continue;

    left.id = top.id;
    left.next = right.next;
    right.live = false;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeResult* m = find_merge(symbols[left.prev].id, left.id)) {
        queue.push({m->rank, left.prev, m->id});
      }
    }
    if (left.next >= 0) {
      if (const MergeResult* m = find_merge(left.id, symbols[left.next].id)) {
        queue.push({m->rank, top.pos, m->id});
      }
    }
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

}  // namespace gka::text::internal
