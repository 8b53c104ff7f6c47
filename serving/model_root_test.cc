#include "serving/model_root.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace arbor::serving {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ModelRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("arbor_model_root_" + std::to_string(getpid()));
    fs::remove_all(base_);
    fs::create_directories(base_ / "models" / "policy");
    fs::create_directories(base_ / "models-evil" / "policy");
    fs::create_directories(base_ / "outside");
    std::ofstream(base_ / "models" / "policy" / "config.json") << "{}";
    std::ofstream(base_ / "outside" / "secret.json") << "{}";
  }
  void TearDown() override { fs::remove_all(base_); }
  std::string P(const std::string& rel) const { return (base_ / rel).string(); }
  fs::path base_;
};

TEST_F(ModelRootTest, NoRootLeavesThePathAlone) {
  EXPECT_EQ(*ConfineToModelRoot("anything/at/all", ""), "anything/at/all");
}

TEST_F(ModelRootTest, FolderInsideTheRootIsResolved) {
  auto dir = ConfineToModelRoot(P("models/policy/../policy/"), P("models"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, fs::canonical(P("models/policy")).string());
  EXPECT_TRUE(ConfineToModelRoot(P("models"), P("models/")).ok());  // the root itself
}

TEST_F(ModelRootTest, DotDotAndPrefixSiblingsAreRefused) {
  const absl::Status up = ConfineToModelRoot(P("models/../outside"), P("models")).status();
  EXPECT_EQ(up.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(up.message(), HasSubstr("outside --model_root"));
  EXPECT_EQ(ConfineToModelRoot(P("models-evil/policy"), P("models")).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(ModelRootTest, SymlinksOutOfTheRootAreRefused) {
  fs::create_directory_symlink(P("outside"), P("models/linked"));
  EXPECT_EQ(ConfineToModelRoot(P("models/linked"), P("models")).status().code(),
            absl::StatusCode::kPermissionDenied);
  // A file inside the folder linking out is refused too, naming it.
  fs::create_symlink(P("outside/secret.json"), P("models/policy/tokenizer.json"));
  const absl::Status file = ConfineToModelRoot(P("models/policy"), P("models")).status();
  EXPECT_EQ(file.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(file.message(), HasSubstr("tokenizer.json resolves to"));
}

TEST_F(ModelRootTest, MissingPathsAreNotFound) {
  EXPECT_EQ(ConfineToModelRoot(P("models/none"), P("models")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(ConfineToModelRoot(P("models/policy"), P("nope")).status().message(),
              HasSubstr("--model_root"));
}

}  // namespace
}  // namespace arbor::serving
