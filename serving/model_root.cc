#include "serving/model_root.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace arbor::serving {
namespace {

namespace fs = std::filesystem;

bool Inside(const fs::path& path, const fs::path& root) {
  // Component-wise, so "/models-evil" is not inside "/models".
  auto r = root.begin();
  auto p = path.begin();
  for (; r != root.end(); ++r, ++p) {
    if (r->empty()) continue;  // a trailing separator
    if (p == path.end() || *p != *r) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ConfineToModelRoot(const std::string& model_dir,
                                               const std::string& root) {
  if (root.empty()) return model_dir;
  std::error_code ec;
  const fs::path real_root = fs::canonical(root, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("--model_root \"", root, "\": ", ec.message()));
  const fs::path real_dir = fs::canonical(model_dir, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("--model \"", model_dir, "\": ", ec.message()));
  if (!Inside(real_dir, real_root)) {
    return absl::PermissionDeniedError(absl::StrCat("--model \"", model_dir, "\" resolves to ",
                                                    real_dir.string(), ", outside --model_root ",
                                                    real_root.string()));
  }
  for (const fs::directory_entry& entry : fs::directory_iterator(real_dir, ec)) {
    std::error_code file_ec;
    const fs::path real_file = fs::canonical(entry.path(), file_ec);
    if (file_ec) continue;  // a dangling link: loading it fails with its own error
    if (!Inside(real_file, real_root)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "--model \"", model_dir, "\": ", entry.path().filename().string(), " resolves to ",
          real_file.string(), ", outside --model_root ", real_root.string()));
    }
  }
  if (ec) return absl::NotFoundError(absl::StrCat("--model \"", model_dir, "\": ", ec.message()));
  return real_dir.string();
}

}  // namespace arbor::serving
