// Shapes, non-owning tensor views and owning host buffers.
//
// Owns: DType, Shape, TensorView (pointer + dtype + shape + device; contiguous row-major),
// Buffer (RAII host allocation, 64-byte aligned). Depends on base only; device allocators
// live in the CUDA sub-target.
//
//   Buffer buf = Buffer::Allocate(Shape{4, 128}, DType::kF32);
//   TensorView v = buf.view();          // [4, 128] f32
//   float* p = v.data<float>();
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "common/base/check.h"
#include "common/tensor/dtype.h"

namespace gka::tensor {

class Shape {
 public:
  static constexpr int kMaxRank = 6;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    GKA_CHECK(static_cast<int>(dims.size()) <= kMaxRank);
    for (int64_t d : dims) dims_[rank_++] = d;
  }
  template <typename It>
  static Shape FromRange(It begin, It end) {
    Shape s;
    for (It it = begin; it != end; ++it) {
      GKA_CHECK(s.rank_ < kMaxRank);
      s.dims_[s.rank_++] = static_cast<int64_t>(*it);
    }
    return s;
  }
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i < 0 ? rank_ + i : i]; }
  int64_t& operator[](int i) { return dims_[i < 0 ? rank_ + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i) {
      if (dims_[i] != o.dims_[i]) return false;
    }
    return true;
  }
  std::string ToString() const;  // "[2, 3]"

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

enum class Device : uint8_t { kCpu, kCuda };

// Non-owning, contiguous. Copy freely; the owner outlives every view.
struct TensorView {
  void* ptr = nullptr;
  DType dtype = DType::kF32;
  Shape shape;
  Device device = Device::kCpu;

  template <typename T>
  T* data() const {
    return static_cast<T*>(ptr);
  }
  int64_t numel() const { return shape.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
};

// Owning host allocation, 64-byte aligned, zero-initialised. Move-only.
class Buffer {
 public:
  Buffer() = default;
  static Buffer Allocate(Shape shape, DType dtype);
  Buffer(Buffer&&) noexcept = default;
  Buffer& operator=(Buffer&&) noexcept = default;

  TensorView view() const { return TensorView{data_.get(), dtype_, shape_, Device::kCpu}; }
  template <typename T>
  T* data() const {
    return reinterpret_cast<T*>(data_.get());
  }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return static_cast<size_t>(shape_.numel()) * DTypeSize(dtype_); }
  bool empty() const { return data_ == nullptr; }

 private:
  struct Free {
    void operator()(void* p) const;
  };
  std::unique_ptr<void, Free> data_;
  Shape shape_;
  DType dtype_ = DType::kF32;
};

}  // namespace gka::tensor
