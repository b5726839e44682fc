// The version of tidemap, for embedders (compile-time checks) and for
// `tidemap --version`. It equals the `project(VERSION ...)` of the top-level
// CMakeLists.txt, which refuses to configure when the two differ.
#ifndef TIDEMAP_BASE_VERSION_H_
#define TIDEMAP_BASE_VERSION_H_

#define TIDEMAP_VERSION_MAJOR 0
#define TIDEMAP_VERSION_MINOR 1
#define TIDEMAP_VERSION_PATCH 0
#define TIDEMAP_VERSION_STRING "0.1.0"
// One number that grows with every release: MAJOR * 10000 + MINOR * 100 + PATCH.
#define TIDEMAP_VERSION \
  (TIDEMAP_VERSION_MAJOR * 10000 + TIDEMAP_VERSION_MINOR * 100 + TIDEMAP_VERSION_PATCH)

#endif  // TIDEMAP_BASE_VERSION_H_
