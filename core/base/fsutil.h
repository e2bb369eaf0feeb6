// Small file-system helpers with checked errors: crash-safe writes (temporary file, fsync, rename,
// fsync of the directory), whole-file reads and their lines, JSON files, writability checks.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lora {

// Reads a whole file; lora::Error (runtime) naming the path if it cannot.
std::string file_read(const std::string& path);
// Splits text into lines (without "\n" or a trailing "\r"), dropping a UTF-8 byte-order mark; no line
// for a final newline.
std::vector<std::string> text_lines(const std::string& text);
// Writes path.tmp, fsyncs it, renames it over path and fsyncs the directory.
void file_write_atomic(const std::string& path, const std::string& content);
// fsync a file or directory by path (errors are reported).
void fsync_path(const std::string& path);
// Parses a JSON file; errors name the file and the byte offset.
nlohmann::json json_read_file(const std::string& path);
// JSON text parsed with duplicate keys rejected (a plain parse keeps the last silently); errors name
// `source` and the byte position. Used for config.json, safetensors headers and index files.
nlohmann::json json_parse_strict(const std::string& text, const std::string& source);
// s as a JSON string literal, for messages: quoted and escaped, with each byte that is not valid UTF-8
// shown as U+FFFD (nlohmann's dump() would throw on it).
std::string json_quote(const std::string& s);
// s with each byte that is not valid UTF-8 replaced by U+FFFD, for text that is shown or stored as JSON.
std::string utf8_sanitize(const std::string& s);
// Creates dir (and parents) and checks that a file can be written in it; a clear error otherwise.
void dir_ensure_writable(const std::string& dir, const std::string& what);

}  // namespace lora
