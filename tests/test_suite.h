// Suites and their preconditions. Every tests/test_*.cpp file is one suite of a test executable
// (tests/CMakeLists.txt: lora_tests for the CPU, lora_tests_cuda and lora_tests_emu for the CUDA tests),
// and ctest runs each suite on its own as `EXE --suite=test_NAME`. A suite that needs what a machine may
// lack (a CUDA device, Java and METEOR's jar, the tools of a script) states it once with
// LORA_TEST_REQUIRES(check): where check returns false, its tests are not run and the suite prints
// "skipped: <why>" (exit code 77, which ctest reports as skipped when the suite runs on its own).
#pragma once
#include <string>

namespace lora_test {

// Returns whether the suite can run here; otherwise sets *why.
using Precondition = bool (*)(std::string* why);

// Records `check` for the suite of `file` (its __FILE__). Returns a dummy for static initialisation.
int suite_requires(const char* file, Precondition check);

}  // namespace lora_test

#define LORA_TEST_CONCAT2(a, b) a##b
#define LORA_TEST_CONCAT(a, b) LORA_TEST_CONCAT2(a, b)
#define LORA_TEST_REQUIRES(check) \
  static const int LORA_TEST_CONCAT(lora_test_requires_, __LINE__) = ::lora_test::suite_requires(__FILE__, check)
