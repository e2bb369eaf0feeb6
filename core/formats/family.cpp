// The family table and its lookups. See family.h; each family is defined in its own family_<name>.cpp.
#include "core/formats/family.h"

#include <stdexcept>

namespace lora {

const std::vector<const Family*>& families() {
  // Listed here, not self-registered: a static library drops object files nothing refers to.
  static const std::vector<const Family*> all = {&family_gpt2(), &family_llama(), &family_roberta()};
  return all;
}

const Family* family_find(const std::string& name) {
  for (const Family* f : families())
    if (name == f->name) return f;
  return nullptr;
}

const Family& family_of(const ModelConfig& c) {
  const Family* f = family_find(c.family);
  if (!f) throw std::logic_error("ModelConfig names no known model family: '" + c.family + "'");
  return *f;
}

const Family* family_for_model_type(const std::string& type) {
  for (const Family* f : families())
    for (const auto& t : f->model_types)
      if (t == type) return f;
  return nullptr;
}

const Family* family_for_gguf_arch(const std::string& arch, const GgufArch** found) {
  for (const Family* f : families())
    for (const auto& a : f->gguf_archs)
      if (arch == a.name) {
        if (found) *found = &a;
        return f;
      }
  if (found) *found = nullptr;
  return nullptr;
}

std::string names_and(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  return out;
}

}  // namespace lora
