#include "common/parallel/communicator.h"

#include <condition_variable>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/base/check.h"

namespace gka::parallel {
namespace {

using tensor::DType;
using tensor::TensorView;

class SingleRank final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  absl::Status AllReduceSum(const TensorView&) override { return absl::OkStatus(); }
  absl::Status AllGather(const TensorView& in, const TensorView& out) override {
    if (in.nbytes() != out.nbytes()) return absl::InvalidArgumentError("AllGather: size mismatch");
    if (in.ptr != out.ptr) std::memcpy(out.ptr, in.ptr, in.nbytes());
    return absl::OkStatus();
  }
};

// A reusable barrier with a generation count, plus the per-rank views of the current
// collective. Phase 1: every rank publishes its view; phase 2: every rank reads all views;
// phase 3: nobody leaves before everyone has read (so views stay valid).
class Rendezvous {
 public:
  explicit Rendezvous(int n) : n_(n), views_(n) {}

  void Arrive() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != gen; });
  }

  TensorView& view(int rank) { return views_[rank]; }
  int size() const { return n_; }

 private:
  const int n_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  std::vector<TensorView> views_;
};

float Load(const TensorView& t, int64_t i) {
  return t.dtype == DType::kF32 ? t.data<float>()[i] : tensor::BF16ToFloat(t.data<uint16_t>()[i]);
}

class InProcess final : public Communicator {
 public:
  InProcess(int rank, std::shared_ptr<Rendezvous> rv) : rank_(rank), rv_(std::move(rv)) {}
  int rank() const override { return rank_; }
  int world_size() const override { return rv_->size(); }

  absl::Status AllReduceSum(const TensorView& t) override {
    if (t.dtype != DType::kF32 && t.dtype != DType::kBF16) {
      return absl::InvalidArgumentError("AllReduceSum: F32 or BF16 only");
    }
    rv_->view(rank_) = t;
    rv_->Arrive();
    absl::Status status = Check(t);
    std::vector<float> sum;
    if (status.ok()) {
      const int64_t n = t.numel();
      sum.assign(n, 0.0f);
      for (int r = 0; r < rv_->size(); ++r) {
        const TensorView& v = rv_->view(r);
        for (int64_t i = 0; i < n; ++i) sum[i] += Load(v, i);
      }
    }
    rv_->Arrive();  // everyone has read every view
    if (status.ok()) {
      for (int64_t i = 0; i < t.numel(); ++i) {
        if (t.dtype == DType::kF32) {
          t.data<float>()[i] = sum[i];
        } else {
          t.data<uint16_t>()[i] = tensor::FloatToBF16(sum[i]);
        }
      }
    }
    rv_->Arrive();  // nobody overwrites a view another rank is still reading
    return status;
  }

  absl::Status AllGather(const TensorView& in, const TensorView& out) override {
    rv_->view(rank_) = in;
    rv_->Arrive();
    absl::Status status = Check(in);
    if (status.ok() && out.nbytes() != in.nbytes() * rv_->size()) {
      status = absl::InvalidArgumentError("AllGather: out must hold world_size × in");
    }
    if (status.ok()) {
      for (int r = 0; r < rv_->size(); ++r) {
        // In place, this rank's block already holds its input; the other ranks read only their
        // own inputs, never the blocks this rank writes.
        char* dst = static_cast<char*>(out.ptr) + r * in.nbytes();
        if (dst != rv_->view(r).ptr) std::memcpy(dst, rv_->view(r).ptr, in.nbytes());
      }
    }
    rv_->Arrive();
    return status;
  }

 private:
  // Every rank must pass the same element count and dtype; all ranks see the same verdict.
  absl::Status Check(const TensorView& mine) {
    for (int r = 0; r < rv_->size(); ++r) {
      const TensorView& v = rv_->view(r);
      if (v.numel() != mine.numel() || v.dtype != mine.dtype) {
        return absl::InvalidArgumentError(
            absl::StrCat("collective mismatch: rank ", r, " passed ", v.numel(), " elements"));
      }
    }
    return absl::OkStatus();
  }

  int rank_;
  std::shared_ptr<Rendezvous> rv_;
};

}  // namespace

std::unique_ptr<Communicator> CreateSingleRank() { return std::make_unique<SingleRank>(); }

std::vector<std::unique_ptr<Communicator>> CreateInProcessGroup(int world_size) {
  GKA_CHECK(world_size >= 1);
  auto rv = std::make_shared<Rendezvous>(world_size);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < world_size; ++r) out.push_back(std::make_unique<InProcess>(r, rv));
  return out;
}

}  // namespace gka::parallel
