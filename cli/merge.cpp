// `lora merge --base MODEL_DIR --adapter DIR --out DIR [--dtype bf16|fp16|fp32] [--labels A,B,...]
// [--verify] [--force] [--overwrite]`: fold an adapter into its base model (core/commands/merge.h) and report
// what was written.
#include <cstdio>

#include "cli/commands.h"
#include "core/base/error.h"
#include "core/commands/merge.h"

namespace lora {

std::shared_ptr<MergeCliOptions> setup_merge(CLI::App& app) {
  auto o = std::make_shared<MergeCliOptions>();
  app.add_option("--base", o->base, "Base model directory (HF layout)")->required();
  app.add_option("--adapter", o->adapter, "Adapter directory (ours or PEFT's)")->required();
  app.add_option("--out", o->out, "Output model directory")->required();
  app.add_option("--dtype", o->dtype, "Output dtype: fp32 (default), bf16 or fp16");
  app.add_flag("--verify", o->verify,
               "Compare merged and base + adapter logits on a probe batch; fail above the dtype's threshold");
  app.add_option("--labels", o->labels,
                 "Names of a saved classification head's labels in id order, comma-separated (config.json id2label)")
      ->delimiter(',');
  app.add_flag("--force", o->force, "Merge even if the adapter names another base model");
  app.add_flag("--overwrite", o->overwrite, "Replace an existing output directory");
  return o;
}

int run_merge(const MergeCliOptions& o) {
  MergeOptions m;
  m.base_dir = o.base;
  m.adapter_dir = o.adapter;
  m.out_dir = o.out;
  m.dtype = merge_dtype_parse(o.dtype);
  m.labels = o.labels;
  m.verify = o.verify;
  m.force = o.force;
  m.overwrite = o.overwrite;
  MergeReport r = merge_run(m);
  for (const auto& n : r.notes) std::printf("note: %s\n", n.c_str());
  const std::string head =
      r.head_labels ? " and the " + std::to_string(r.head_labels) + "-label classification head" : std::string();
  std::printf("merged %d LoRA module(s)%s into %zu tensors, %s -> %s\n", r.modules_merged, head.c_str(),
              r.tensors_written, dtype_name(m.dtype), o.out.c_str());
  if (r.verified)
    std::printf("verify: max abs %slogit error %.3g, max rel %.3g (threshold %.3g for %s): ok\n",
                r.head_labels ? "classification " : "", r.verify.max_abs, r.verify.max_rel, r.verify.threshold,
                dtype_name(m.dtype));
  return EXIT_CODE_OK;
}

}  // namespace lora
