// Internal to gka::text: the BPE model of a byte-level tokenizer.json, on raw bytes.
//
// Owns the token <-> bytes tables, the merge ranks and a per-word cache. Merging follows
// Hugging Face tokenizers' Word::merge_all exactly: repeatedly merge the adjacent pair with
// the lowest rank, the leftmost first among equal ranks.
//
//   GKA_ASSIGN_OR_RETURN(auto bpe, BpeModel::Create(std::move(vocab), std::move(merges)));
//   bpe->EncodeWord(" world", &ids);  // appends 1879
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace gka::text::internal {

// Thread-safe: EncodeWord may run concurrently (the cache has its own lock).
class BpeModel {
 public:
  // `vocab`: raw token bytes -> id. `merges`: pairs of raw token bytes, highest priority
  // first. InvalidArgument when a merge names a token the vocabulary lacks or produces one
  // it lacks, or when one of the 256 single bytes has no token (a byte-level vocabulary
  // spells every byte). `ignore_merges`: a piece that is itself a token becomes that token
  // without merging (tokenizer.json model.ignore_merges, used by Llama 3).
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(
      absl::flat_hash_map<std::string, int32_t> vocab,
      const std::vector<std::pair<std::string, std::string>>& merges, bool ignore_merges);

  // Appends the ids of one pre-tokenized piece (raw bytes, non-empty).
  void EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const;

  const absl::flat_hash_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct MergeResult {
    int32_t rank;
    int32_t id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  BpeModel() = default;
  void MergeAll(absl::string_view word, std::vector<int32_t>* ids) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  absl::flat_hash_map<uint64_t, MergeResult> merges_;
  int32_t byte_ids_[256] = {};
  bool ignore_merges_ = false;

  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace gka::text::internal
