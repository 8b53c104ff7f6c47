// Fuzzes the safetensors reader: the input is a whole file. Whatever it
// opens, every tensor's bytes lie inside the mapping (read all of them) and
// the float ones convert.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace arbor::runtime;
  // An anonymous in-memory file: the reader maps a path, as for a checkpoint.
  static const int fd = memfd_create("safetensors_fuzz", 0);
  if (fd < 0) arbor::fuzz::Fail("memfd_create failed");
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) {
    arbor::fuzz::Fail("cannot write the memfd");
  }
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return 0;
  uint64_t checksum = 0;
  for (const TensorView& t : (*file)->tensors()) {
    if (t.num_bytes != static_cast<size_t>(t.num_elements()) * SafetensorsDTypeSize(t.dtype)) {
      arbor::fuzz::Fail("tensor byte size disagrees with its shape");
    }
    for (size_t i = 0; i < t.num_bytes; ++i) checksum += t.data[i];
    if (t.dtype == SafetensorsDType::kF32 || t.dtype == SafetensorsDType::kF16 ||
        t.dtype == SafetensorsDType::kBF16) {
      std::vector<float> out(static_cast<size_t>(t.num_elements()));
      if (!ConvertToFloat32(t, absl::MakeSpan(out)).ok()) arbor::fuzz::Fail("convert failed");
    }
    if ((*file)->Find(t.name) != &t) arbor::fuzz::Fail("Find disagrees with tensors()");
  }
  return checksum == 0xdeadbeefdeadbeefull ? 1 : 0;
}
