// The pre-tokenizers of byte-level BPE: the split patterns that cut text into the words BPE runs on,
// matched by hand on code points (std::regex has no \p{L}). Classes come from core/text/unicode_tables.cpp:
// \p{L} letters, \p{N} numbers, \s the White_Space property, as in the Oniguruma regexes HF `tokenizers`
// runs. Every pattern matches at every position, so the words cover the text with no gaps.
// Contract: the words equal HF `tokenizers`' (pre_tokenizer.pre_tokenize_str) for the same pattern.
#include <string>
#include <utility>
#include <vector>

#include "core/text/tokenizer.h"
#include "core/text/tokenizer_bpe.h"

namespace lora {
namespace bpe {
namespace {

enum CharClass : uint8_t { CHAR_CLASS_LETTER, CHAR_CLASS_NUMBER, CHAR_CLASS_SPACE, CHAR_CLASS_SYMBOL };

CharClass char_class(uint32_t cp) {
  if (cp == CP_INVALID) return CHAR_CLASS_SYMBOL;
  if (unicode_is_letter(cp)) return CHAR_CLASS_LETTER;
  if (unicode_is_number(cp)) return CHAR_CLASS_NUMBER;
  if (unicode_is_space(cp)) return CHAR_CLASS_SPACE;
  return CHAR_CLASS_SYMBOL;
}

// text[begin, end) as code points, their classes and byte offsets.
struct CodePoints {
  std::vector<uint32_t> cps;
  std::vector<CharClass> cls;
  std::vector<size_t> offs;  // byte offset of each code point, plus end
  CodePoints(const std::string& text, size_t begin, size_t end) {
    for (size_t pos = begin; pos < end;) {
      offs.push_back(pos);
      uint32_t cp = utf8_next(text.data(), end, pos);
      cps.push_back(cp);
      cls.push_back(char_class(cp));
    }
    offs.push_back(end);
  }
  size_t size() const { return cps.size(); }
  // End of the run of class c that starts at i.
  size_t run_end(size_t i, CharClass c) const {
    while (i < cps.size() && cls[i] == c) i++;
    return i;
  }
  // End of a whitespace word starting at i under "\s+(?!\S)|\s+": the run but its last character when
  // a non-space follows a run of two or more (that character goes with the next word), else the run.
  size_t space_end(size_t i) const {
    size_t k = run_end(i, CHAR_CLASS_SPACE);
    return (k < cps.size() && k - i >= 2) ? k - 1 : k;
  }
};

// ---------------------------------------------------------------------------------------------------
// GPT-2 (openai/gpt-2 src/encoder.py), tried in this order at each position:
//   's|'t|'re|'ve|'m|'ll|'d | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+

// Length in code points of the contraction at cps[i] ("'s" ... "'d"), 0 if none. Case-sensitive,
// as in the reference pattern: "'S" is not a contraction.
size_t contraction_len(const std::vector<uint32_t>& cps, size_t i) {
  size_t n = cps.size();
  if (cps[i] != '\'' || i + 1 >= n) return 0;
  uint32_t a = cps[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= n) return 0;
  uint32_t b = cps[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

void split_gpt2(const CodePoints& c, std::vector<std::pair<size_t, size_t>>& words) {
  size_t n = c.size();
  size_t i = 0;
  while (i < n) {
    size_t j = contraction_len(c.cps, i);
    if (j > 0) {
      j += i;
    } else {
      // " ?X+" for the three non-space classes: an optional leading U+0020, then a run of one class.
      size_t start = (c.cps[i] == ' ' && i + 1 < n && c.cls[i + 1] != CHAR_CLASS_SPACE) ? i + 1 : i;
      j = c.cls[start] != CHAR_CLASS_SPACE ? c.run_end(start, c.cls[start]) : c.space_end(i);
    }
    words.emplace_back(c.offs[i], c.offs[j]);
    i = j;
  }
}

// ---------------------------------------------------------------------------------------------------
// Qwen2 (transformers models/qwen2/tokenization_qwen2.py, PRETOKENIZE_REGEX) and LLaMA 3 (Meta's
// tokenizer.json), which differ only in the digits a number word takes (llama.cpp hand-codes the same
// two: LLAMA_VOCAB_PRE_TYPE_QWEN2, _LLAMA3). Tried in this order at each position:
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)   a contraction, in any case
//   [^\r\n\p{L}\p{N}]?\p{L}+       a letter run, with one character before it that is not a newline,
//                                  letter or number (" word", "\tword", "(word")
//   \p{N}  or  \p{N}{1,3}          one digit (Qwen2), up to three (LLaMA 3)
//    ?[^\s\p{L}\p{N}]+[\r\n]*      a symbol run, an optional U+0020 before it and the newlines after it
//   \s*[\r\n]+                     whitespace up to and including its last newline
//   \s+(?!\S) | \s+                as GPT-2's

bool is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }

// Length in code points of the contraction at cps[i], any case, 0 if none. (?i) in Oniguruma folds
// case by Unicode's CaseFolding.txt, where besides A-Z only U+017F (long s) folds onto one of these
// letters: "'ſ" is a contraction for HF too.
size_t contraction_len_any_case(const std::vector<uint32_t>& cps, size_t i) {
  size_t n = cps.size();
  if (cps[i] != '\'' || i + 1 >= n) return 0;
  auto fold = [](uint32_t cp) -> uint32_t {
    if (cp >= 'A' && cp <= 'Z') return cp + ('a' - 'A');
    return cp == 0x17F ? 's' : cp;
  };
  uint32_t a = fold(cps[i + 1]);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= n) return 0;
  uint32_t b = fold(cps[i + 2]);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

void split_qwen2(const CodePoints& c, size_t max_digits, std::vector<std::pair<size_t, size_t>>& words) {
  size_t n = c.size();
  size_t i = 0;
  while (i < n) {
    size_t j = contraction_len_any_case(c.cps, i);
    CharClass ci = c.cls[i];
    bool letter_next = i + 1 < n && c.cls[i + 1] == CHAR_CLASS_LETTER;
    if (j > 0) {
      j += i;
    } else if (ci == CHAR_CLASS_LETTER) {
      j = c.run_end(i, CHAR_CLASS_LETTER);
    } else if (letter_next && ci != CHAR_CLASS_NUMBER && !is_newline(c.cps[i])) {
      j = c.run_end(i + 1, CHAR_CLASS_LETTER);
    } else if (ci == CHAR_CLASS_NUMBER) {
      j = i + 1;
      while (j < n && j - i < max_digits && c.cls[j] == CHAR_CLASS_NUMBER) j++;
    } else if (ci == CHAR_CLASS_SYMBOL || (c.cps[i] == ' ' && i + 1 < n && c.cls[i + 1] == CHAR_CLASS_SYMBOL)) {
      j = c.run_end(ci == CHAR_CLASS_SYMBOL ? i : i + 1, CHAR_CLASS_SYMBOL);
      while (j < n && is_newline(c.cps[j])) j++;
    } else {
      // Whitespace: "\s*[\r\n]+" ends after the run's last newline (\s* gives back what follows it).
      size_t k = c.run_end(i, CHAR_CLASS_SPACE);
      size_t last_newline = k;
      for (size_t m = i; m < k; m++) {
        if (is_newline(c.cps[m])) last_newline = m;
      }
      j = last_newline < k ? last_newline + 1 : c.space_end(i);
    }
    words.emplace_back(c.offs[i], c.offs[j]);
    i = j;
  }
}

}  // namespace

void split_words_into(const std::string& text, size_t begin, size_t end, BpeSplit split,
                      std::vector<std::pair<size_t, size_t>>& words) {
  CodePoints c(text, begin, end);
  switch (split) {
    case BPE_SPLIT_GPT2: split_gpt2(c, words); break;
    case BPE_SPLIT_QWEN2: split_qwen2(c, 1, words); break;
    case BPE_SPLIT_LLAMA3: split_qwen2(c, 3, words); break;
  }
}

}  // namespace bpe

std::vector<std::pair<size_t, size_t>> bpe_split_words(const std::string& text, BpeSplit split) {
  std::vector<std::pair<size_t, size_t>> words;
  bpe::split_words_into(text, 0, text.size(), split, words);
  return words;
}

}  // namespace lora
