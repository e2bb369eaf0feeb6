// SentencePiece (Kudo & Richardson, 2018) tokenizers of the LLaMA family: a thin wrapper around
// libsentencepiece reading tokenizer.model. Control pieces (<s>, </s>) written in the text map to their
// ids, as HF's LLaMA tokenizer does with its added tokens: the text is split at them and each piece is
// encoded on its own. No BOS/EOS is added by encode(); datasets add them. bos_id() is the model's <s>
// when tokenizer_config.json beside it does not set add_bos_token to false, as HF's LlamaTokenizer puts
// <s> first by default (add_bos_token defaults to true there); -1 when the model has no BOS piece.
// Contract: ids are SentencePiece's for the same model file; eos_id is the model's (-1 if it has none);
// the fingerprint hashes the model file's bytes and whether a BOS is added.
#include <sentencepiece_processor.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/text/tokenizer.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class SpTokenizer : public Tokenizer {
 public:
  sentencepiece::SentencePieceProcessor sp;
  std::string path;
  std::string hash_hex;
  int32_t bos = -1;  // put first in every example (add_bos_token), -1 for none
  std::vector<std::pair<std::string, int32_t>> controls;  // control pieces matched in text

  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> ids;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t hit_at = std::string::npos;
      const std::pair<std::string, int32_t>* hit = nullptr;
      for (const auto& c : controls) {
        size_t at = text.find(c.first, pos);
        if (at < hit_at || (at == hit_at && at != std::string::npos && c.first.size() > hit->first.size())) {
          hit_at = at;
          hit = &c;
        }
      }
      size_t piece_end = hit ? hit_at : text.size();
      if (piece_end > pos) encode_piece(text.substr(pos, piece_end - pos), ids);
      if (!hit) break;
      ids.push_back(hit->second);
      pos = hit_at + hit->first.size();
    }
    return ids;
  }

  // Control pieces decode to their text (SentencePiece alone would drop them), so that text written
  // with "</s>" survives a round trip; the pieces between them decode as one run each.
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      std::string text;
      auto status = sp.Decode(run, &text);
      if (!status.ok()) fail_runtime(path + ": SentencePiece decode failed: " + status.ToString());
      out += text;
      run.clear();
    };
    for (int32_t id : ids) {
      if (sp.IsControl(checked(id))) {
        flush();
        out += sp.IdToPiece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }

  std::string token_text(int32_t id) const override { return sp.IdToPiece(checked(id)); }
  int32_t eos_id() const override { return sp.eos_id(); }
  int32_t bos_id() const override { return bos; }
  int vocab_size() const override { return sp.GetPieceSize(); }
  std::string fingerprint() const override { return hash_hex; }
  std::string kind() const override { return "sentencepiece"; }

 private:
  int checked(int32_t id) const {
    if (id < 0 || id >= vocab_size()) {
      fail_runtime("token id " + std::to_string(id) + " is not in the vocabulary of " + path + " (" +
                       std::to_string(vocab_size()) + " ids)",
                   "the ids were made with a different tokenizer; re-tokenize the data with this model's");
    }
    return id;
  }

  void encode_piece(const std::string& text, std::vector<int32_t>& ids) const {
    std::vector<int> piece_ids;
    auto status = sp.Encode(text, &piece_ids);
    if (!status.ok()) fail_runtime(path + ": SentencePiece encode failed: " + status.ToString());
    ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
  }
};

// tokenizer_config.json's add_bos_token (transformers' LlamaTokenizer setting); true when the file or the
// key is absent or null, as transformers defaults it.
bool add_bos_token_read(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return true;
  const std::string hint = "tokenizer_config.json is transformers' tokenizer settings; re-save it with save_pretrained";
  const json doc = json_read_file(path.string());
  if (!doc.is_object()) fail_runtime(path.string() + ": expected a JSON object", hint);
  const auto it = doc.find("add_bos_token");
  if (it == doc.end() || it->is_null()) return true;
  if (!it->is_boolean())
    fail_runtime(path.string() + ": add_bos_token must be true or false, found " + it->dump(), hint);
  return it->get<bool>();
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_sp_load(const std::string& model_path) {
  auto tok = std::make_unique<SpTokenizer>();
  tok->path = model_path;
  std::string bytes = tokenizer_file_read(model_path);
  auto status = tok->sp.LoadFromSerializedProto(bytes);
  if (!status.ok()) {
    fail_runtime(model_path + ": not a valid SentencePiece model (" + status.ToString() + ")",
                 "tokenizer.model must be the serialized SentencePiece ModelProto of the model's release");
  }
  tok->bos = add_bos_token_read(fs::path(model_path).parent_path() / "tokenizer_config.json") ? tok->sp.bos_id() : -1;
  uint64_t h = tokenizer_hash("sentencepiece\n", TOKENIZER_HASH_SEED);
  h = tokenizer_hash(bytes, h);
  if (tok->bos >= 0) h = tokenizer_hash("bos " + std::to_string(tok->bos) + "\n", h);  // caches made without BOS differ
  tok->hash_hex = tokenizer_hash_hex(h);
  for (int id = 0; id < tok->sp.GetPieceSize(); id++) {
    const std::string& piece = tok->sp.IdToPiece(id);
    if (tok->sp.IsControl(id) && !piece.empty()) tok->controls.emplace_back(piece, id);
  }
  return tok;
}

}  // namespace lora
