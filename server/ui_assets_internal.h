// The web console's static files (server/ui/), compiled into the binary: the
// build turns each file into a byte array (cmake/EmbedFiles.cmake), so the
// console needs no files at run time and nothing from the network.
#ifndef TIDEMAP_SERVER_UI_ASSETS_INTERNAL_H_
#define TIDEMAP_SERVER_UI_ASSETS_INTERNAL_H_

#include <cstddef>
#include <string_view>
#include <vector>

namespace tidemap {

struct UiAsset {
  std::string_view path;          // relative to server/ui/, e.g. "app.js"
  std::string_view content_type;  // from the file's extension
  std::string_view bytes;         // the file's contents
};

// Every embedded file, in the order the build listed them. The views point
// into static storage: valid for the whole program. Thread-safe.
const std::vector<UiAsset>& UiAssets();

}  // namespace tidemap

#endif  // TIDEMAP_SERVER_UI_ASSETS_INTERNAL_H_
