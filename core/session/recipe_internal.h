// Internal to recipe reading: what core/session/recipe.cpp (the YAML structure, sections and keys, --set
// overrides) shares with core/session/recipe_values.cpp (reading one value into a field: scalar rules, type
// checks, path resolution). Not part of the public interface, which is core/session/recipe.h.
#pragma once
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/base/strings.h"
#include "core/session/recipe.h"

namespace lora {
namespace recipe_internal {

// One problem found while reading a recipe; all are collected and thrown together.
struct Issue {
  std::string text;  // "<where>: <key>: <problem>"
  std::string hint;  // may be empty
};

// "found ..." for a node: its text, quoted unless a number, or its shape.
std::string describe(const YAML::Node& n);

// Reads `n` into field `f`. `where` prefixes messages; `base` resolves input paths (null: the current
// directory, as for --set). Appends to `issues` and returns false on a problem.
bool assign(const RecipeField& f, const YAML::Node& n, const std::string& where,
            const std::filesystem::path* base, std::vector<Issue>& issues);

}  // namespace recipe_internal
}  // namespace lora
