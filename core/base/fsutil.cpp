// See fsutil.h.
#include "core/base/fsutil.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "core/base/error.h"

namespace lora {

namespace fs = std::filesystem;

std::string file_read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_runtime("cannot read '" + path + "': " + std::strerror(errno), "check that the file exists and is readable");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

std::vector<std::string> text_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail_runtime("cannot open '" + path + "' to sync it: " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some file systems refuse fsync on directories (EINVAL); the data itself was synced.
  if (rc != 0 && err != EINVAL) fail_runtime("fsync of '" + path + "' failed: " + std::strerror(err));
}

void file_write_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    fail_runtime("cannot write '" + tmp + "': " + std::strerror(errno), "check that the directory exists and is writable");
  size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      fail_runtime("writing '" + tmp + "' failed: " + std::strerror(err), "check free disk space");
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) fail_runtime("syncing '" + tmp + "' failed: " + std::strerror(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    fail_runtime("renaming '" + tmp + "' to '" + path + "' failed: " + std::strerror(errno));
  fs::path parent = fs::path(path).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}

namespace {
// nlohmann's other exceptions while parsing: out_of_range.406, a number beyond a double's range.
constexpr const char* kJsonNumberHint = "a number such as 1e999 does not fit a double; fix or regenerate the file";

// "[json.exception.out_of_range.406] number overflow parsing '1e999'" -> "number overflow parsing '1e999'"
std::string json_error_text(const std::string& what) {
  const size_t cut = what.find("] ");
  return cut == std::string::npos ? what : what.substr(cut + 2);
}
}  // namespace

nlohmann::json json_read_file(const std::string& path) {
  std::string text = file_read(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    fail_runtime("'" + path + "' is not valid JSON (at byte " + std::to_string(e.byte) + "): " + e.what(),
                 "fix or regenerate the file");
  } catch (const nlohmann::json::exception& e) {
    fail_runtime("'" + path + "' cannot be read as JSON: " + json_error_text(e.what()), kJsonNumberHint);
  }
}

nlohmann::json json_parse_strict(const std::string& text, const std::string& source) {
  std::vector<std::set<std::string>> open_objects;  // keys seen in each object being parsed
  nlohmann::json::parser_callback_t track = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::object_start) open_objects.emplace_back();
    if (event == nlohmann::json::parse_event_t::object_end) open_objects.pop_back();
    if (event == nlohmann::json::parse_event_t::key && !open_objects.back().insert(parsed.get<std::string>()).second)
      fail_runtime(source + ": duplicate key '" + parsed.get<std::string>() + "'",
                   "every name may appear once; the file is corrupt or hand-edited");
    return true;
  };
  try {
    return nlohmann::json::parse(text, track);
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    size_t cut = what.find("] ");
    fail_runtime(source + ": invalid JSON at byte " + std::to_string(e.byte) + ": " +
                     (cut == std::string::npos ? what : what.substr(cut + 2)),
                 "fix or regenerate the file");
  } catch (const nlohmann::json::exception& e) {
    fail_runtime(source + ": cannot be read as JSON: " + json_error_text(e.what()), kJsonNumberHint);
  }
}

void dir_ensure_writable(const std::string& dir, const std::string& what) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail_runtime("cannot create " + what + " '" + dir + "': " + ec.message(), "choose a writable location");
  const std::string probe = (fs::path(dir) / ".lora-write-test").string();
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    fail_runtime(what + " '" + dir + "' is not writable: " + std::strerror(errno),
                 "fix its permissions or choose another with --output");
  ::close(fd);
  ::unlink(probe.c_str());
}

std::string json_quote(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string utf8_sanitize(const std::string& s) { return nlohmann::json::parse(json_quote(s)).get<std::string>(); }

}  // namespace lora
