// Model folders confined to a configured root (--model_root), so that a
// worker or verifier started with a mistaken or hostile --model cannot read
// model files from elsewhere on the machine.
// Thread-safety: the function is thread-safe (it only reads the file system).
#ifndef ARBOR_SERVING_MODEL_ROOT_H_
#define ARBOR_SERVING_MODEL_ROOT_H_

#include <string>

#include "absl/status/statusor.h"

namespace arbor::serving {

// `model_dir` resolved (symbolic links and ".." followed: realpath) when it
// lies inside `root` (also resolved), and so does every file directly in it
// (a symbolic link to a file elsewhere is refused too); `model_dir`
// unchanged when `root` is empty. NOT_FOUND when either does not exist,
// PERMISSION_DENIED naming both resolved paths when the folder or a file
// lies outside.
absl::StatusOr<std::string> ConfineToModelRoot(const std::string& model_dir,
                                               const std::string& root);

}  // namespace arbor::serving

#endif  // ARBOR_SERVING_MODEL_ROOT_H_
