// Safetensors reading: a file is memory-mapped read-only and its header
// (8-byte little-endian length + JSON) is validated up front: known dtype,
// non-negative shape, byte size matching the shape, offsets inside the file
// and no two tensors overlapping. A checkpoint is either one
// `model.safetensors` or a sharded set described by
// `model.safetensors.index.json`. Errors name the file and the tensor.
//
// Tensor data stays in the mapping; TensorView pointers are valid while the
// SafetensorsFile / SafetensorsCheckpoint that produced them lives.
//
// Thread-safety: immutable after Open; const methods are thread-safe.
#ifndef ARBOR_RUNTIME_MODEL_SAFETENSORS_H_
#define ARBOR_RUNTIME_MODEL_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace arbor::runtime {

// Every dtype of the safetensors format; only F32, F16 and BF16 convert to
// fp32 (the others are validated for size and otherwise ignored).
enum class SafetensorsDType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

absl::string_view SafetensorsDTypeName(SafetensorsDType dtype);
size_t SafetensorsDTypeSize(SafetensorsDType dtype);

struct TensorView {
  std::string name;
  std::string file;  // path of the file holding it, for error messages
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t num_bytes = 0;

  int64_t num_elements() const;
  std::string ShapeString() const;  // "[4, 64]"
};

// Converts `tensor` (F32, F16 or BF16) to fp32 into `out` (num_elements()
// floats). Other dtypes are INVALID_ARGUMENT naming the tensor.
absl::Status ConvertToFloat32(const TensorView& tensor, absl::Span<float> out);
// Scalar conversions (exposed for tests).
float Bf16ToFloat(uint16_t bits);
float Fp16ToFloat(uint16_t bits);

class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // nullptr when absent.
  const TensorView* Find(absl::string_view name) const;
  const std::vector<TensorView>& tensors() const { return tensors_; }
  // The optional "__metadata__" string map.
  const absl::flat_hash_map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::vector<TensorView> tensors_;
  absl::flat_hash_map<std::string, size_t> index_;
  absl::flat_hash_map<std::string, std::string> metadata_;
};

class SafetensorsCheckpoint {
 public:
  // Opens <model_dir>/model.safetensors, or every shard named by
  // <model_dir>/model.safetensors.index.json (each tensor of the weight map
  // must be in the shard it names).
  static absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> Open(const std::string& model_dir);

  // nullptr when absent.
  const TensorView* Find(absl::string_view name) const;
  // NOT_FOUND naming the tensor and the checkpoint when absent.
  absl::StatusOr<const TensorView*> Get(absl::string_view name) const;
  std::vector<std::string> TensorNames() const;
  const std::string& model_dir() const { return model_dir_; }

 private:
  SafetensorsCheckpoint() = default;
  std::string model_dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, const TensorView*> tensors_;
};

}  // namespace arbor::runtime

#endif  // ARBOR_RUNTIME_MODEL_SAFETENSORS_H_
