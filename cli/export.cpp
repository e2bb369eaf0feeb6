// `lora export --adapter DIR --to gguf|peft|merged --out PATH [--base DIR] [--dtype D] [--labels A,B,...]
// [--overwrite]`:
// an adapter in another ecosystem's format (core/commands/export_gguf.h).
#include <cstdio>

#include "cli/commands.h"
#include "core/base/error.h"
#include "core/commands/export_gguf.h"

namespace lora {

std::shared_ptr<ExportCliOptions> setup_export(CLI::App& app) {
  auto o = std::make_shared<ExportCliOptions>();
  app.add_option("--adapter", o->adapter, "Adapter directory")->required();
  app.add_option("--to", o->to, "Format: gguf (llama.cpp LoRA), peft (PEFT's layout) or merged (HF model)")->required();
  app.add_option("--out", o->out, "Output path (a file for gguf, a directory otherwise)")->required();
  app.add_option("--base", o->base,
                 "Base model directory: needed for merged and for LLaMA-family gguf when the adapter's "
                 "base_model_name_or_path is not a local directory");
  app.add_option("--dtype", o->dtype, "Output dtype for merged: fp32 (default), bf16 or fp16");
  app.add_option("--labels", o->labels, "For merged: names of a saved classification head's labels, as lora merge")
      ->delimiter(',');
  app.add_flag("--overwrite", o->overwrite, "Replace an existing output");
  return o;
}

int run_export(const ExportCliOptions& o) {
  ExportOptions e;
  e.format = export_format_parse(o.to);
  e.adapter_dir = o.adapter;
  e.out = o.out;
  e.base_dir = o.base;
  e.dtype = merge_dtype_parse(o.dtype);
  e.labels = o.labels;
  e.overwrite = o.overwrite;
  ExportReport r = export_run(e);
  for (const auto& n : r.notes) std::printf("note: %s\n", n.c_str());
  if (e.format == ExportFormat::gguf)
    std::printf("wrote %s: llama.cpp LoRA for arch %s, %d tensors, adapter.lora.alpha %g\n", o.out.c_str(),
                r.arch.c_str(), r.tensors, double(r.alpha));
  else
    std::printf("wrote %s (%s), %d tensors\n", o.out.c_str(), o.to.c_str(), r.tensors);
  return EXIT_CODE_OK;
}

}  // namespace lora
