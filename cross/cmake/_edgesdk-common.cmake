# Shared part of edgesdk's cross toolchain files. Included by <triple>.cmake after it sets
# EDGESDK_TRIPLE and CMAKE_SYSTEM_PROCESSOR. Not a toolchain file on its own.
#
# Cache variables (edgesdk cross build sets them; set them yourself with -D when calling cmake):
#   EDGESDK_MCPU         the board's core, e.g. cortex-a72   -> -mcpu=...
#   EDGESDK_EXTRA_FLAGS  more target flags, ;-separated     e.g. -mfpu=neon-vfpv4
#   EDGESDK_SYSROOT      a full sysroot (the board's rootfs with libc6-dev): CMAKE_SYSROOT
#   EDGESDK_BOARD_ROOT   the board's rootfs WITHOUT headers: compile against Debian's cross libc,
#                        but resolve and search libraries in the board's own /lib and /usr/lib
#   EDGESDK_CROSS_PREFIX compiler prefix, default "${EDGESDK_TRIPLE}-" (Debian's cross GCC)

set(CMAKE_SYSTEM_NAME Linux)

# try_compile() projects re-read this file; pass our settings on to them.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES
     EDGESDK_MCPU EDGESDK_EXTRA_FLAGS EDGESDK_SYSROOT EDGESDK_BOARD_ROOT EDGESDK_CROSS_PREFIX)

set(EDGESDK_MCPU "" CACHE STRING "-mcpu of the target core")
set(EDGESDK_EXTRA_FLAGS "" CACHE STRING "extra target flags (;-separated)")
set(EDGESDK_SYSROOT "" CACHE PATH "full sysroot (board rootfs with libc6-dev)")
set(EDGESDK_BOARD_ROOT "" CACHE PATH "board rootfs used for libraries only")
set(EDGESDK_CROSS_PREFIX "${EDGESDK_TRIPLE}-" CACHE STRING "cross compiler prefix")

set(CMAKE_C_COMPILER "${EDGESDK_CROSS_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${EDGESDK_CROSS_PREFIX}g++")

set(_edgesdk_flags "")
if(EDGESDK_MCPU)
  string(APPEND _edgesdk_flags " -mcpu=${EDGESDK_MCPU}")
endif()
foreach(_f IN LISTS EDGESDK_EXTRA_FLAGS)
  string(APPEND _edgesdk_flags " ${_f}")
endforeach()
set(CMAKE_C_FLAGS_INIT "${_edgesdk_flags}")
set(CMAKE_CXX_FLAGS_INIT "${_edgesdk_flags}")

if(EDGESDK_SYSROOT)
  # The board's rootfs is the sysroot: headers, crt files, glibc and libraries are the board's.
  set(CMAKE_SYSROOT "${EDGESDK_SYSROOT}")
  set(CMAKE_FIND_ROOT_PATH "${EDGESDK_SYSROOT}")
elseif(EDGESDK_BOARD_ROOT)
  # No headers on the board: Debian's cross libc (same glibc series as the board's Debian)
  # gives headers and start files; the linker resolves the board's own shared libraries.
  set(CMAKE_FIND_ROOT_PATH "/usr/${EDGESDK_TRIPLE}" "${EDGESDK_BOARD_ROOT}")
  set(_edgesdk_link
      "-Wl,-rpath-link,${EDGESDK_BOARD_ROOT}/lib/${EDGESDK_TRIPLE}:${EDGESDK_BOARD_ROOT}/usr/lib/${EDGESDK_TRIPLE}")
  set(CMAKE_EXE_LINKER_FLAGS_INIT "${_edgesdk_link}")
  set(CMAKE_SHARED_LINKER_FLAGS_INIT "${_edgesdk_link}")
  set(CMAKE_MODULE_LINKER_FLAGS_INIT "${_edgesdk_link}")
else()
  set(CMAKE_FIND_ROOT_PATH "/usr/${EDGESDK_TRIPLE}")
endif()

# Programs (cmake, protoc...) run on the host; headers, libraries and packages come from the target.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
