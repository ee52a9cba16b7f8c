#include "common/tensor/tensor.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace gka::tensor {

std::string Shape::ToString() const {
  return absl::StrCat("[", absl::StrJoin(dims_.begin(), dims_.begin() + rank_, ", "), "]");
}

void Buffer::Free::operator()(void* p) const { std::free(p); }

Buffer Buffer::Allocate(Shape shape, DType dtype) {
  Buffer b;
  b.shape_ = shape;
  b.dtype_ = dtype;
  const size_t bytes = b.nbytes();
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  GKA_CHECK(p != nullptr) << "out of host memory allocating " << bytes << " bytes";
  std::memset(p, 0, rounded == 0 ? 64 : rounded);
  b.data_.reset(p);
  return b;
}

}  // namespace gka::tensor
