# arbor-allinone as a real process on the bundled models, driven by arborctl
# (included from tests/integration/CMakeLists.txt).
if(TARGET arbor-allinone AND TARGET arborctl AND TARGET arbor_subprocess)
  arbor_test(allinone_test SOURCES ${CMAKE_CURRENT_LIST_DIR}/allinone_test.cc
    DEPS arbor_subprocess nlohmann_json::nlohmann_json absl::strings
    TIMEOUT 600 LABELS integration)
  add_dependencies(allinone_test arbor-allinone arborctl)
endif()
