# Install rules for embedders (included at the end of the top-level CMakeLists.txt).
#
#   <prefix>/include/tidemap/<component>/*.h      public headers, as <tidemap/component/x.h>
#   <prefix>/<libdir>/libtidemap_<component>.a    one static library per component
#   <prefix>/<libdir>/cmake/tidemap/              tidemapConfig.cmake (+ version, targets)
#   <prefix>/<libdir>/pkgconfig/tidemap-<component>.pc   the same for pkg-config, per
#                                                 component, and tidemap.pc for all
#   <prefix>/bin/tidemap                          the CLI and daemon
#
# Everything is derived from TIDEMAP_COMPONENTS and the components' link interfaces, so a
# new component is installed, exported and given its .pc file with no edit here: its DEPS
# and LINKS (tidemap_component) are all this file reads. Tests, benchmarks and fuzz
# targets are never installed.
#
# The exported targets are tidemap::tidemap (everything) and tidemap::<component>.
# Third-party dependencies reach the consumer's link line as follows:
#   Ns::target (a CMake package)   -> find_dependency(Ns) in tidemapConfig.cmake
#                                     (Boost: with COMPONENTS for its compiled libraries)
#   PkgConfig::P (pkg_check_modules IMPORTED_TARGET, one module per prefix)
#                                  -> pkg_check_modules(P ... <module>) in the config,
#                                     Requires: <module> in the component's .pc
#   -flags and plain names         -> passed through as they are.
# A component's .pc file carries the compile flags (include dirs, definitions) of its
# public DEPS only; its LINKS reach the consumer's link line and nothing else, so a
# program that uses the replica compiles and links with LevelDB, libsodium and xxHash
# and none of the daemon's libraries.
# Cap'n Proto is linked through pkg-config (PkgConfig::CAPNP), not its CMake package:
# that package runs a C check, which would make every consumer enable C.

include(CMakePackageConfigHelpers)

set(TIDEMAP_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/tidemap)
set(TIDEMAP_INSTALL_PKGCONFIGDIR ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

set(_tidemap_targets "")
set(_tidemap_components "")
set(_tidemap_dirs "")  # component folders (a folder may hold more than one component)
foreach(component ${TIDEMAP_COMPONENTS})
  if(TARGET tidemap_${component})
    list(APPEND _tidemap_targets tidemap_${component})
    list(APPEND _tidemap_components ${component})
    set_target_properties(tidemap_${component} PROPERTIES EXPORT_NAME ${component})
    get_target_property(_dir tidemap_${component} TIDEMAP_DIR)
    if(NOT _dir IN_LIST _tidemap_dirs)
      list(APPEND _tidemap_dirs ${_dir})
    endif()
  endif()
endforeach()

# ---- headers ----------------------------------------------------------------------------
# Every <folder>/*.h except *_internal.h, plus whatever those include from an installed
# component (an internal header a public one needs comes along). An include of anything
# else (a generated Cap'n Proto header, a component that is not built) would break
# the installed tree: that is reported here, and the install test fails on it.
set(_tidemap_headers "")
foreach(_dir ${_tidemap_dirs})
  file(GLOB _found CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/${_dir}/*.h)
  list(FILTER _found EXCLUDE REGEX "_internal\\.h$")
  list(APPEND _tidemap_headers ${_found})
endforeach()
set(_queue ${_tidemap_headers})
while(_queue)
  list(POP_FRONT _queue _header)
  file(STRINGS ${_header} _lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]tidemap/")
  foreach(_line ${_lines})
    string(REGEX REPLACE "^[^<\"]*[<\"]tidemap/([^>\"]+)[>\"].*$" "\\1" _included "${_line}")
    string(REGEX REPLACE "/.*$" "" _dir "${_included}")
    set(_path ${PROJECT_SOURCE_DIR}/${_included})
    if(_dir IN_LIST _tidemap_dirs AND EXISTS ${_path})
      if(NOT _path IN_LIST _tidemap_headers)
        list(APPEND _tidemap_headers ${_path})
        list(APPEND _queue ${_path})
      endif()
    else()
      file(RELATIVE_PATH _rel ${PROJECT_SOURCE_DIR} ${_header})
      message(WARNING "installed header ${_rel} includes <tidemap/${_included}>, which is not an "
                      "installed header of a built component: the installed tree will not "
                      "compile (generated Cap'n Proto headers must stay inside schemas/)")
    endif()
  endforeach()
endwhile()
foreach(_header ${_tidemap_headers})
  file(RELATIVE_PATH _rel ${PROJECT_SOURCE_DIR} ${_header})
  get_filename_component(_dir ${_rel} DIRECTORY)
  install(FILES ${_header} DESTINATION ${TIDEMAP_INSTALL_INCLUDEDIR}/tidemap/${_dir})
endforeach()

# ---- libraries, executable, export set --------------------------------------------------
install(TARGETS ${_tidemap_targets} tidemap EXPORT tidemapTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT tidemapTargets NAMESPACE tidemap:: DESTINATION ${TIDEMAP_INSTALL_CMAKEDIR})
if(TARGET tidemap_exe)
  install(TARGETS tidemap_exe RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# ---- third-party dependencies -----------------------------------------------------------
# Flags that a pkg-config consumer needs for an imported CMake target: its library file
# as -l (or as a path outside the standard directories), its link interface (walked),
# its include dirs outside /usr/include, and its definitions.
function(_tidemap_pc_flags_of items out_libs out_cflags)
  set(libs "")
  set(cflags "")
  set(seen "")
  set(queue ${items})
  while(queue)
    list(POP_FRONT queue item)
    if(item IN_LIST seen OR item MATCHES "\\$<")
      continue()  # generator expressions are configuration-dependent: not for a .pc
    endif()
    list(APPEND seen ${item})
    if(item STREQUAL "Threads::Threads")
      list(APPEND libs -pthread)
    elseif(TARGET ${item})
      get_target_property(imported ${item} IMPORTED)
      get_target_property(type ${item} TYPE)
      if(NOT imported)
        message(FATAL_ERROR "tidemap.pc: ${item} is not an imported target")
      endif()
      if(NOT type STREQUAL "INTERFACE_LIBRARY")
        set(location "")
        get_target_property(configs ${item} IMPORTED_CONFIGURATIONS)
        foreach(config ${configs} NOCONFIG)
          get_target_property(location ${item} IMPORTED_LOCATION_${config})
          if(location)
            break()
          endif()
        endforeach()
        if(NOT location)
          get_target_property(location ${item} IMPORTED_LOCATION)
        endif()
        if(location)
          list(PREPEND queue ${location})
        endif()
      endif()
      get_target_property(link ${item} INTERFACE_LINK_LIBRARIES)
      if(link)
        list(APPEND queue ${link})
      endif()
      get_target_property(dirs ${item} INTERFACE_INCLUDE_DIRECTORIES)
      foreach(dir ${dirs})
        if(dir AND NOT dir IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES
           AND NOT dir STREQUAL "/usr/include")
          list(APPEND cflags -I${dir})
        endif()
      endforeach()
      get_target_property(defs ${item} INTERFACE_COMPILE_DEFINITIONS)
      foreach(def ${defs})
        if(def AND NOT def MATCHES "\\$<")
          list(APPEND cflags -D${def})
        endif()
      endforeach()
    elseif(item MATCHES "::")
      message(WARNING "tidemap.pc: ${item} is not visible from the top-level directory and "
                      "is left out: pass it in the component's DEPS (which makes it global) "
                      "or find its package at the top level")
    elseif(IS_ABSOLUTE ${item})
      get_filename_component(name ${item} NAME)
      get_filename_component(dir ${item} DIRECTORY)
      if(name MATCHES "^lib(.+)\\.(so|a)(\\..*)?$")
        if(NOT dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)
          list(APPEND libs -L${dir})
        endif()
        list(APPEND libs -l${CMAKE_MATCH_1})
      else()
        list(APPEND libs ${item})
      endif()
    elseif(item MATCHES "^-")
      list(APPEND libs ${item})
    else()
      list(APPEND libs -l${item})
    endif()
  endwhile()
  set(${out_libs} ${libs} PARENT_SCOPE)
  set(${out_cflags} ${cflags} PARENT_SCOPE)
endfunction()

# What the components link outside themselves, first use first. Static libraries carry
# their LINKS too (as $<LINK_ONLY:...>): the consumer's link line needs them, but not
# their compile flags. Per component: _requires_<c> (tidemap-<x> and pkg-config modules,
# for Requires:), _public_<c> and _private_<c> (other items, with or without cflags).
set(_packages "")     # CMake packages (target namespaces) for find_dependency
set(_pc_prefixes "")  # pkg_check_modules prefixes (PkgConfig::<prefix>)
set(_earlier "")
foreach(component ${_tidemap_components})
  set(_requires_${component} "")
  set(_public_${component} "")
  set(_private_${component} "")
  get_target_property(_links tidemap_${component} INTERFACE_LINK_LIBRARIES)
  foreach(_item ${_links})
    set(_kind public)
    if(_item MATCHES "^\\$<LINK_ONLY:(.*)>$")
      set(_item ${CMAKE_MATCH_1})
      set(_kind private)
    endif()
    string(REGEX REPLACE "^\\$<INSTALL_INTERFACE:(.*)>$" "\\1" _item "${_item}")
    if(_item MATCHES "^\\$<BUILD_INTERFACE:" OR _item STREQUAL "")
      continue()
    elseif(_item MATCHES "^tidemap_(.+)$")
      if(NOT CMAKE_MATCH_1 IN_LIST _earlier)
        message(FATAL_ERROR "tidemap_${component} links ${_item}: declare the components "
                            "in dependency order (the .pc link order)")
      endif()
      list(APPEND _requires_${component} tidemap-${CMAKE_MATCH_1})
    elseif(_item MATCHES "^PkgConfig::(.+)$")
      set(_prefix ${CMAKE_MATCH_1})
      if(NOT ${_prefix}_MODULE_NAME)
        message(FATAL_ERROR "tidemap_${component} links ${_item}: give each "
                            "pkg_check_modules prefix exactly one module (the installed "
                            "config recreates the target from ${_prefix}_MODULE_NAME)")
      endif()
      if(NOT _prefix IN_LIST _pc_prefixes)
        list(APPEND _pc_prefixes ${_prefix})
      endif()
      list(APPEND _requires_${component} ${${_prefix}_MODULE_NAME})
    elseif(_item MATCHES "^([A-Za-z0-9_]+)::(.+)$")
      set(_package ${CMAKE_MATCH_1})
      if(NOT _package IN_LIST _packages)
        list(APPEND _packages ${_package})
      endif()
      list(APPEND _components_of_${_package} ${CMAKE_MATCH_2})
      list(APPEND _${_kind}_${component} ${_item})
    elseif(_item MATCHES "\\$<")
      # The CMake package carries it as it is; a .pc file cannot say "only if".
      message(WARNING "tidemap-${component}.pc: the link item ${_item} is conditional "
                      "and left out; pkg-config users must add it themselves")
    else()
      list(APPEND _${_kind}_${component} ${_item})
    endif()
  endforeach()
  list(APPEND _earlier ${component})
endforeach()

# The find_dependency block of tidemapConfig.cmake.
set(TIDEMAP_CONFIG_DEPENDENCIES "")
foreach(_package ${_packages})
  set(_args "")
  if(_package STREQUAL "Boost")
    # Boost::headers comes with the package; compiled libraries are COMPONENTS.
    set(_boost_components ${_components_of_Boost})
    list(REMOVE_ITEM _boost_components headers boost diagnostic_definitions
         disable_autolinking dynamic_linking)
    list(REMOVE_DUPLICATES _boost_components)
    if(_boost_components)
      list(JOIN _boost_components " " _joined)
      set(_args " COMPONENTS ${_joined}")
    endif()
  endif()
  string(APPEND TIDEMAP_CONFIG_DEPENDENCIES "find_dependency(${_package}${_args})\n")
endforeach()
if(_pc_prefixes)
  string(APPEND TIDEMAP_CONFIG_DEPENDENCIES "find_dependency(PkgConfig)\n")
  foreach(_prefix ${_pc_prefixes})
    set(_module ${${_prefix}_MODULE_NAME})
    string(APPEND TIDEMAP_CONFIG_DEPENDENCIES
           "_tidemap_pkg_config(${_prefix} ${_module})\n")
  endforeach()
endif()

# ---- tidemapConfig.cmake, version file ---------------------------------------------------
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tidemapConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/tidemapConfig.cmake
                              INSTALL_DESTINATION ${TIDEMAP_INSTALL_CMAKEDIR})
# 0.x: a minor release may break the API.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tidemapConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tidemapConfig.cmake
              ${PROJECT_BINARY_DIR}/tidemapConfigVersion.cmake
        DESTINATION ${TIDEMAP_INSTALL_CMAKEDIR})

# ---- tidemap-<component>.pc, tidemap.pc --------------------------------------------------
# Relocatable: the prefix is found from the .pc file's own directory, so the files are
# right for whatever --prefix `cmake --install` is given. A component's file links its own
# library, then its LINKS and DEPS; Requires: brings the components and pkg-config modules
# it uses, which pkg-config places after it on the link line.
file(RELATIVE_PATH TIDEMAP_PC_PREFIX_FROM_PCFILEDIR /prefix/${TIDEMAP_INSTALL_PKGCONFIGDIR}
     /prefix)
string(REGEX REPLACE "/$" "" TIDEMAP_PC_PREFIX_FROM_PCFILEDIR "${TIDEMAP_PC_PREFIX_FROM_PCFILEDIR}")
foreach(component ${_tidemap_components})
  _tidemap_pc_flags_of("${_public_${component}}" _public_libs _public_cflags)
  _tidemap_pc_flags_of("${_private_${component}}" _private_libs _unused)
  set(_libs -ltidemap_${component} ${_private_libs} ${_public_libs})
  list(REMOVE_DUPLICATES _public_cflags)
  set(TIDEMAP_PC_NAME tidemap-${component})
  list(JOIN _libs " " TIDEMAP_PC_LIBS)
  list(JOIN _public_cflags " " TIDEMAP_PC_CFLAGS)
  list(JOIN _requires_${component} " " TIDEMAP_PC_REQUIRES)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/tidemap-component.pc.in
                 ${PROJECT_BINARY_DIR}/pkgconfig/tidemap-${component}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/tidemap-${component}.pc
          DESTINATION ${TIDEMAP_INSTALL_PKGCONFIGDIR})
endforeach()
set(_all ${_tidemap_components})
list(REVERSE _all)  # users before what they use
list(TRANSFORM _all PREPEND tidemap-)
list(JOIN _all " " TIDEMAP_PC_REQUIRES)
configure_file(${PROJECT_SOURCE_DIR}/cmake/tidemap.pc.in ${PROJECT_BINARY_DIR}/tidemap.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/tidemap.pc DESTINATION ${TIDEMAP_INSTALL_PKGCONFIGDIR})
