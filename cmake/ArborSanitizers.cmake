# Sanitizer and fuzzing builds (docs/RELIABILITY.md), each in its own build
# folder:
#   -DARBOR_FUZZ=ON      clang only: builds just the libFuzzer targets
#                        (tests/fuzz/CMakeLists.txt) and the libraries they
#                        need, with -fsanitize=fuzzer,address,undefined;
#                        scripts/fuzz.sh.
#   -DARBOR_SANITIZE=address,undefined | thread
#                        every target with those sanitizers (UB aborts, so a
#                        test fails on the first report); scripts/sanitize.sh.
option(ARBOR_FUZZ "Build only the libFuzzer targets (needs clang)" OFF)
set(ARBOR_SANITIZE "" CACHE STRING "Sanitizers for every target: address,undefined or thread")

if(ARBOR_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "ARBOR_FUZZ=ON needs clang: configure with -DCMAKE_C_COMPILER=clang-14 "
                        "-DCMAKE_CXX_COMPILER=clang++-14 (scripts/fuzz.sh does)")
  endif()
  # Only the fuzz targets: no tests, benchmarks or CUDA to configure or build.
  set(ARBOR_BUILD_TESTS OFF)
  set(ARBOR_BUILD_BENCH OFF)
  set(ARBOR_CUDA OFF)
  # -O1 and line tables only: half the compile time of -O2 -g, the same
  # stack traces; assertions stay on.
  set(CMAKE_C_FLAGS_RELWITHDEBINFO "-O1 -gline-tables-only")
  set(CMAKE_CXX_FLAGS_RELWITHDEBINFO "-O1 -gline-tables-only")
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined
                      -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

if(ARBOR_SANITIZE)
  if(ARBOR_FUZZ)
    message(FATAL_ERROR "ARBOR_FUZZ and ARBOR_SANITIZE are separate builds")
  endif()
  if(ARBOR_SANITIZE MATCHES "thread" AND ARBOR_SANITIZE MATCHES "address")
    message(FATAL_ERROR "ARBOR_SANITIZE: thread cannot be combined with address")
  endif()
  # nvcc does not take these flags; the CUDA backend is built by the plain build.
  set(ARBOR_CUDA OFF)
  # -O1 -g1: faster to build than -O2 -g, still with file:line in reports.
  set(CMAKE_C_FLAGS_RELWITHDEBINFO "-O1 -g1")
  set(CMAKE_CXX_FLAGS_RELWITHDEBINFO "-O1 -g1")
  add_compile_options($<$<COMPILE_LANGUAGE:CXX,C>:-fsanitize=${ARBOR_SANITIZE}>
                      $<$<COMPILE_LANGUAGE:CXX,C>:-fno-omit-frame-pointer>)
  if(ARBOR_SANITIZE MATCHES "undefined")
    add_compile_options($<$<COMPILE_LANGUAGE:CXX,C>:-fno-sanitize-recover=undefined>)
  endif()
  add_link_options(-fsanitize=${ARBOR_SANITIZE})
endif()

# Debian's Abseil is not built with TSan: annotate its Mutex
# (tests/sanitize/absl_tsan_hooks.cc) in every binary linked after this point.
if(ARBOR_SANITIZE MATCHES "thread")
  add_library(arbor_tsan_absl_hooks SHARED ${CMAKE_SOURCE_DIR}/tests/sanitize/absl_tsan_hooks.cc)
  target_link_libraries(arbor_tsan_absl_hooks PRIVATE absl::synchronization ${CMAKE_DL_LIBS})
  link_libraries(arbor_tsan_absl_hooks)
endif()
