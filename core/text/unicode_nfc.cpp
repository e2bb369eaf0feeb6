// Unicode Normalization Form C (UAX #15) through utf8proc (JuliaStrings/utf8proc, Debian's
// libutf8proc-dev, linked statically): the normalizer of Qwen2's tokenizer.json. HF `tokenizers` runs
// NFC on each piece of text between added tokens (core/text/tokenizer_bpe.cpp).
// Contract: valid UTF-8 comes back in NFC; bytes that are not valid UTF-8 are kept, and each valid run
// between them is normalized on its own; ASCII text is returned as it is, without the library.
// utf8proc 2.8 has Unicode 15.0; HF's NFC (the unicode-normalization-alignments crate) has older tables.
// Every single code point normalizes alike in both (all checked), but a few combining marks added since
// Unicode 10 (U+0C3C Telugu nukta, U+16FF0 and U+16FF1, U+1715, U+A82C, U+0D3B, U+0D3C, U+0EBA) have
// canonical class 0 there, so after another mark (as in U+0958 + U+0C3C) HF leaves them unordered: 153
// of 10.6 million base + mark pairs checked differ, all such.
#include <cstdlib>
#include <string>

#include <utf8proc.h>

#include "core/base/error.h"
#include "core/text/tokenizer.h"
#include "core/text/tokenizer_bpe.h"

namespace lora {
namespace {

void nfc_append(const std::string& text, size_t begin, size_t end, std::string& out) {
  bool ascii = true;
  for (size_t k = begin; k < end && ascii; k++) ascii = static_cast<unsigned char>(text[k]) < 0x80;
  if (ascii) {
    out.append(text, begin, end - begin);
    return;
  }
  utf8proc_uint8_t* norm = nullptr;
  utf8proc_ssize_t len =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + begin),
                   static_cast<utf8proc_ssize_t>(end - begin), &norm,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (len < 0) {
    fail_runtime(std::string("Unicode normalization (NFC) failed: ") + utf8proc_errmsg(len),
                 "the text is valid UTF-8 here, so this is a bug in lora; please report it");
  }
  out.append(reinterpret_cast<const char*>(norm), static_cast<size_t>(len));
  std::free(norm);
}

}  // namespace

std::string unicode_nfc(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  size_t run = 0;  // start of the current valid run
  for (size_t pos = 0; pos < text.size();) {
    size_t at = pos;
    if (bpe::utf8_next(text.data(), text.size(), pos) != bpe::CP_INVALID) continue;
    nfc_append(text, run, at, out);
    out += text[at];
    run = pos;
  }
  nfc_append(text, run, text.size(), out);
  return out;
}

}  // namespace lora
