# install_test: what an embedder does with an installed tidemap, run as a CMake script
# (cmake -P) by ctest. Proves that
#   1. `cmake --install` fills a scratch prefix with the headers, libraries, CMake package,
#      pkg-config file and executable, and nothing of the tests, benchmarks or generated
#      Cap'n Proto code;
#   2. every installed header compiles from the install tree alone, warning-free under our
#      warning flags (pkg-config gives -I, not -isystem, so warnings in them would show);
#   3. examples/embed configures with find_package(tidemap) (CMAKE_PREFIX_PATH=prefix),
#      builds, and runs to convergence (exit 0);
#   4. a one-file program builds with `pkg-config --cflags --libs tidemap` and runs;
#   5. a replica-only program builds with `pkg-config --cflags --libs tidemap-replica`,
#      gets no flag of the daemon's libraries (spdlog, fmt, toml++, OpenSSL, Cap'n Proto,
#      Boost) and needs no shared library but LevelDB's, libsodium, xxHash and the C/C++
#      runtime, and runs;
#   6. examples/node (two net::Node over loopback) builds with find_package(tidemap) and
#      the tidemap::net target, and converges; the README shows its main.cc verbatim.
# In a sanitizer build the tidemap libraries are instrumented, so the consumers are
# built with the same -fsanitize flags (and the same compiler) and run under them.
#
# Inputs (-D): BUILD_DIR SOURCE_DIR WORK_DIR CXX_COMPILER BUILD_TYPE SANITIZE LIBDIR BINDIR
# INCLUDEDIR.
cmake_minimum_required(VERSION 3.21)

foreach(var BUILD_DIR SOURCE_DIR WORK_DIR CXX_COMPILER LIBDIR BINDIR INCLUDEDIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "install_test.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# Runs a command; stops the test with its output when it fails. The output is returned
# in `step_output`.
function(step name)
  string(TIMESTAMP started "%s")
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(TIMESTAMP finished "%s")
  math(EXPR seconds "${finished} - ${started}")
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "FAILED: ${name} (exit ${rc})\n$ ${command}\n${out}\n${err}")
  endif()
  message(STATUS "ok: ${name} (${seconds} s)")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

set(sanitize_flags "")
if(SANITIZE)
  set(sanitize_flags -fsanitize=${SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  list(JOIN sanitize_flags " " shown)
  message(STATUS "sanitizer build: consumers are built and linked with ${shown}")
endif()
set(warning_flags -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wnon-virtual-dtor
                  -Wold-style-cast -Werror)
find_program(NINJA ninja)
set(generator "")
if(NINJA)
  set(generator -G Ninja)
endif()

# ---- 1. install ---------------------------------------------------------------------------
set(config_args "")
if(BUILD_TYPE)
  set(config_args --config ${BUILD_TYPE})
endif()
step("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} ${config_args})

foreach(file ${INCLUDEDIR}/tidemap/base/status.h ${INCLUDEDIR}/tidemap/replica/replica.h
             ${INCLUDEDIR}/tidemap/replica/sync.h ${INCLUDEDIR}/tidemap/schemas/codec.h
             ${INCLUDEDIR}/tidemap/schemas/messages.h ${LIBDIR}/libtidemap_replica.a
             ${LIBDIR}/cmake/tidemap/tidemapConfig.cmake
             ${LIBDIR}/cmake/tidemap/tidemapConfigVersion.cmake
             ${LIBDIR}/cmake/tidemap/tidemapTargets.cmake ${LIBDIR}/pkgconfig/tidemap.pc
             ${LIBDIR}/pkgconfig/tidemap-replica.pc ${LIBDIR}/pkgconfig/tidemap-net.pc
             ${BINDIR}/tidemap)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "FAILED: ${file} is not installed")
  endif()
endforeach()
file(GLOB_RECURSE unwanted RELATIVE ${prefix} ${prefix}/*.capnp* ${prefix}/*_test*
     ${prefix}/*bench* ${prefix}/*fuzz* ${prefix}/*gtest*
     ${prefix}/*test_support*)
file(GLOB binaries RELATIVE ${prefix}/${BINDIR} ${prefix}/${BINDIR}/*)
if(unwanted OR NOT binaries STREQUAL "tidemap")
  message(FATAL_ERROR "FAILED: installed what embedders must not get: ${unwanted} "
                      "(${BINDIR}: ${binaries})")
endif()
step("installed tidemap --help" ${prefix}/${BINDIR}/tidemap --help)

set(ENV{PKG_CONFIG_PATH} ${prefix}/${LIBDIR}/pkgconfig)
step("pkg-config --cflags" pkg-config --cflags tidemap)
separate_arguments(pc_cflags UNIX_COMMAND "${step_output}")
step("pkg-config --libs" pkg-config --libs tidemap)
separate_arguments(pc_libs UNIX_COMMAND "${step_output}")
list(JOIN pc_cflags " " shown_cflags)
list(JOIN pc_libs " " shown_libs)
message(STATUS "pkg-config: ${shown_cflags} ${shown_libs}")

# ---- 2. every installed header, from the install tree alone ----------------------------
file(GLOB_RECURSE headers RELATIVE ${prefix}/${INCLUDEDIR} ${prefix}/${INCLUDEDIR}/*.h)
set(all_headers "// Generated by install_test: every installed header.\n")
foreach(header ${headers})
  string(APPEND all_headers "#include \"${header}\"\n")
endforeach()
file(WRITE ${WORK_DIR}/all_headers.cc "${all_headers}")
list(LENGTH headers header_count)
step("${header_count} installed headers compile" ${CXX_COMPILER} -std=c++20 -fsyntax-only
     ${warning_flags} ${pc_cflags} ${WORK_DIR}/all_headers.cc)

# ---- 3. examples/embed through find_package ----------------------------------------------
set(example_build ${WORK_DIR}/embed-build)
list(JOIN sanitize_flags " " sanitize_string)
list(JOIN warning_flags " " warning_string)
step("configure examples/embed" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/embed
     -B ${example_build} ${generator} -DCMAKE_BUILD_TYPE=Release
     -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_PREFIX_PATH=${prefix}
     -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF "-DCMAKE_CXX_FLAGS=${warning_string} ${sanitize_string}"
     "-DCMAKE_EXE_LINKER_FLAGS=${sanitize_string}")
file(STRINGS ${example_build}/CMakeCache.txt found_dir REGEX "^tidemap_DIR:")
if(NOT found_dir STREQUAL "tidemap_DIR:PATH=${prefix}/${LIBDIR}/cmake/tidemap")
  message(FATAL_ERROR "FAILED: find_package(tidemap) found ${found_dir}, not the scratch prefix")
endif()
step("build examples/embed" ${CMAKE_COMMAND} --build ${example_build})
step("run examples/embed" ${example_build}/embed)
message("${step_output}")
if(NOT step_output MATCHES "\nconverged\n$")
  message(FATAL_ERROR "FAILED: examples/embed exited 0 but did not print `converged`")
endif()

# ---- 4. a one-file program through pkg-config --------------------------------------------
step("build with pkg-config" ${CXX_COMPILER} -std=c++20 ${warning_flags} ${sanitize_flags}
     ${pc_cflags} ${SOURCE_DIR}/tests/install/pkgconfig_main.cc -o ${WORK_DIR}/pkgconfig_main
     ${pc_libs})
step("run the pkg-config build" ${WORK_DIR}/pkgconfig_main)
message("${step_output}")

# ---- 5. a replica-only program through pkg-config ----------------------------------------
step("pkg-config tidemap-replica" pkg-config --cflags --libs tidemap-replica)
separate_arguments(replica_flags UNIX_COMMAND "${step_output}")
foreach(flag ${replica_flags})
  if(flag MATCHES "spdlog|fmt|FMT|toml|ssl|crypto|capnp|kj|BOOST|LEVELDB_SHARED")
    message(FATAL_ERROR "FAILED: tidemap-replica.pc gives ${flag}: ${step_output}")
  endif()
endforeach()
step("build replica-only" ${CXX_COMPILER} -std=c++20 ${warning_flags} ${sanitize_flags}
     ${SOURCE_DIR}/tests/install/replica_only_main.cc -o ${WORK_DIR}/replica_only
     ${replica_flags})
step("readelf replica-only" readelf -d ${WORK_DIR}/replica_only)
string(REGEX MATCHALL "Shared library: \\[[^]]+\\]" needed "${step_output}")
foreach(library ${needed})
  if(NOT library MATCHES "\\[lib(leveldb|snappy|sodium|xxhash|stdc\\+\\+|m|gcc_s|c|pthread|asan|ubsan|tsan)\\.so")
    message(FATAL_ERROR "FAILED: the replica-only program needs ${library}")
  endif()
endforeach()
if(NOT needed MATCHES "leveldb" OR NOT needed MATCHES "sodium")
  message(FATAL_ERROR "FAILED: readelf found no LevelDB or libsodium in: ${needed}")
endif()
step("run the replica-only build" ${WORK_DIR}/replica_only)
message("${step_output}")

# ---- 6. examples/node: a networked node through tidemap::net -----------------------------
set(node_build ${WORK_DIR}/node-build)
step("configure examples/node" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/node
     -B ${node_build} ${generator} -DCMAKE_BUILD_TYPE=Release
     -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_PREFIX_PATH=${prefix}
     -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF "-DCMAKE_CXX_FLAGS=${warning_string} ${sanitize_string}"
     "-DCMAKE_EXE_LINKER_FLAGS=${sanitize_string}")
step("build examples/node" ${CMAKE_COMMAND} --build ${node_build})
step("run examples/node" ${node_build}/node)
message("${step_output}")
if(NOT step_output MATCHES "\nconverged\n$")
  message(FATAL_ERROR "FAILED: examples/node exited 0 but did not print `converged`")
endif()
file(READ ${SOURCE_DIR}/examples/node/main.cc node_source)
file(READ ${SOURCE_DIR}/README.md readme)
string(FIND "${readme}" "${node_source}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "FAILED: README.md does not show examples/node/main.cc as it is")
endif()

# Leave the prefix for inspection only when something failed (FATAL_ERROR skips this).
file(REMOVE_RECURSE ${WORK_DIR})
